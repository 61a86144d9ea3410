//! What Postgres clients introspect: `pg_catalog` (from datafusion-pg-catalog), with Weir's
//! materialized views shown as such, `information_schema.columns` with Postgres type names, and
//! the few functions psql needs beyond it.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session as DfSession, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result as DfResult;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_plan::ExecutionPlan;

use crate::catalog::Registry;
use crate::syntax::compat::WEIR_COLUMNS;

/// Postgres' name for a column type (`information_schema.columns.data_type`) and its short
/// name (`udt_name`), for the Arrow types Weir's columns have.
fn pg_type_names(t: &DataType) -> (&'static str, &'static str) {
    match t {
        DataType::Boolean => ("boolean", "bool"),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => ("smallint", "int2"),
        DataType::Int32 | DataType::UInt16 => ("integer", "int4"),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => ("bigint", "int8"),
        DataType::Float16 | DataType::Float32 => ("real", "float4"),
        DataType::Float64 => ("double precision", "float8"),
        DataType::Decimal128(..) | DataType::Decimal256(..) => ("numeric", "numeric"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ("text", "text"),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => ("bytea", "bytea"),
        DataType::Date32 | DataType::Date64 => ("date", "date"),
        DataType::Time32(_) | DataType::Time64(_) => ("time without time zone", "time"),
        DataType::Timestamp(_, None) => ("timestamp without time zone", "timestamp"),
        DataType::Timestamp(_, Some(_)) => ("timestamp with time zone", "timestamptz"),
        DataType::Interval(_) | DataType::Duration(_) => ("interval", "interval"),
        DataType::List(_) | DataType::LargeList(_) => ("ARRAY", "_text"),
        _ => ("text", "text"),
    }
}

/// `information_schema.columns` as Postgres fills it, over Weir's streams, views and tables.
#[derive(Debug)]
struct PgColumns {
    db: Registry,
}

impl PgColumns {
    fn columns_schema() -> SchemaRef {
        use datafusion::arrow::datatypes::{Field, Schema};
        let text = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
        let int = |n: &str| Field::new(n, DataType::Int64, true);
        Arc::new(Schema::new(vec![
            text("table_catalog", false),
            text("table_schema", false),
            text("table_name", false),
            text("column_name", false),
            Field::new("ordinal_position", DataType::Int64, false),
            text("column_default", true),
            text("is_nullable", false),
            text("data_type", false),
            int("character_maximum_length"),
            int("character_octet_length"),
            int("numeric_precision"),
            int("numeric_precision_radix"),
            int("numeric_scale"),
            int("datetime_precision"),
            text("interval_type", true),
            text("udt_name", false),
        ]))
    }
}

#[async_trait]
impl TableProvider for PgColumns {
    fn schema(&self) -> SchemaRef {
        Self::columns_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        _filters: &[datafusion::logical_expr::Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        use datafusion::arrow::array::{Int64Array, StringBuilder};
        let mut relations: Vec<(String, SchemaRef)> = Vec::new();
        relations.extend(
            self.db
                .streams()
                .iter()
                .map(|s| (s.def.name.clone(), Arc::clone(&s.schema))),
        );
        relations.extend(
            self.db
                .views()
                .iter()
                .map(|v| (v.def.name.clone(), Arc::clone(v.table.schema()))),
        );
        relations.extend(
            self.db
                .tables()
                .iter()
                .map(|t| (t.def.name.clone(), Arc::clone(&t.schema))),
        );
        let mut names = [
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
        ];
        let (mut nullable, mut types, mut udts) = (
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
        );
        let mut positions = Vec::new();
        let (mut precision, mut radix, mut scale, mut datetime) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut n = 0;
        for (table, schema) in &relations {
            for (i, f) in schema.fields().iter().enumerate() {
                n += 1;
                names[0].append_value(table);
                names[1].append_value(f.name());
                names[2].append_value(crate::catalog::CATALOG);
                positions.push(i as i64 + 1);
                nullable.append_value(if f.is_nullable() { "YES" } else { "NO" });
                let (data_type, udt) = pg_type_names(f.data_type());
                types.append_value(data_type);
                udts.append_value(udt);
                let (p, r, sc) = match f.data_type() {
                    DataType::Int16 | DataType::Int8 | DataType::UInt8 => {
                        (Some(16), Some(2), Some(0))
                    }
                    DataType::Int32 | DataType::UInt16 => (Some(32), Some(2), Some(0)),
                    DataType::Int64 | DataType::UInt32 | DataType::UInt64 => {
                        (Some(64), Some(2), Some(0))
                    }
                    DataType::Float32 => (Some(24), Some(2), None),
                    DataType::Float64 => (Some(53), Some(2), None),
                    DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => {
                        (Some(i64::from(*p)), Some(10), Some(i64::from(*s)))
                    }
                    _ => (None, None, None),
                };
                precision.push(p);
                radix.push(r);
                scale.push(sc);
                datetime.push(match f.data_type() {
                    DataType::Timestamp(..) | DataType::Time64(_) => Some(6),
                    DataType::Date32 | DataType::Date64 => Some(0),
                    _ => None,
                });
            }
        }
        let [mut tables, mut columns, mut catalogs] = names;
        let nulls = || Arc::new(Int64Array::from(vec![None::<i64>; n])) as ArrayRef;
        let batch = RecordBatch::try_new(
            Self::columns_schema(),
            vec![
                Arc::new(catalogs.finish()),
                Arc::new(StringArray::from(vec![crate::catalog::SCHEMA; n])),
                Arc::new(tables.finish()),
                Arc::new(columns.finish()),
                Arc::new(Int64Array::from(positions)),
                Arc::new(StringArray::from(vec![None::<&str>; n])),
                Arc::new(nullable.finish()),
                Arc::new(types.finish()),
                nulls(),
                nulls(),
                Arc::new(Int64Array::from(precision)),
                Arc::new(Int64Array::from(radix)),
                Arc::new(Int64Array::from(scale)),
                Arc::new(Int64Array::from(datetime)),
                Arc::new(StringArray::from(vec![None::<&str>; n])),
                Arc::new(udts.finish()),
            ],
        )?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema(),
            projection.cloned(),
        )?)
    }
}

/// A function of one argument that is always true (`pg_function_is_visible(oid)` and kin:
/// everything in Weir is visible).
#[derive(Debug, PartialEq, Eq, Hash)]
struct AlwaysTrue {
    name: &'static str,
    signature: Signature,
}

impl ScalarUDFImpl for AlwaysTrue {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Ok(ColumnarValue::Array(Arc::new(BooleanArray::from(vec![
            true;
            args.number_rows
        ]))))
    }
}

/// A function that returns the same value for every row, whatever its arguments
/// (`pg_get_function_result` over a `pg_proc` that lists no user functions, sizes Weir does
/// not report through the catalog, ...).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Constant {
    name: &'static str,
    value: ScalarValue,
    signature: Signature,
}

impl ScalarUDFImpl for Constant {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(self.value.data_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Ok(ColumnarValue::Array(
            self.value.to_array_of_size(args.number_rows)?,
        ))
    }
}

/// `json_build_object(key, value, ...)`: a JSON object as text.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: Signature,
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        if arrays.len() % 2 != 0 {
            return datafusion::common::plan_err!(
                "json_build_object takes key, value pairs, got {} arguments",
                arrays.len()
            );
        }
        let options = FormatOptions::default();
        let formatters = arrays
            .iter()
            .map(|a| ArrayFormatter::try_new(a.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        let out: StringArray = (0..args.number_rows)
            .map(|row| {
                let fields: Vec<String> = arrays
                    .chunks(2)
                    .zip(formatters.chunks(2))
                    .map(|(pair, f)| {
                        let key = json_string(&f[0].value(row).to_string());
                        let value = if pair[1].is_null(row) {
                            "null".to_string()
                        } else if pair[1].data_type().is_numeric()
                            || pair[1].data_type() == &DataType::Boolean
                        {
                            f[1].value(row).to_string()
                        } else {
                            json_string(&f[1].value(row).to_string())
                        };
                        format!("{key}: {value}")
                    })
                    .collect();
                Some(format!("{{{}}}", fields.join(", ")))
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// A size as Postgres' `pg_size_pretty` prints it: bytes, then kB, MB, GB, TB (rounded, 1024 each).
fn size_pretty(bytes: i64) -> String {
    let mut value = bytes;
    for unit in ["bytes", "kB", "MB", "GB", "TB"] {
        if value.abs() < 10 * 1024 || unit == "TB" {
            return format!("{value} {unit}");
        }
        value = (value + 512) / 1024;
    }
    format!("{value} PB")
}

/// `pg_catalog` with `pg_class` showing materialized views as `relkind = 'm'` (every view in
/// Weir is materialized), so psql's `\dm` lists them and `\d` calls them materialized views.
#[derive(Debug)]
struct WeirPgCatalog {
    inner: Arc<dyn SchemaProvider>,
    db: Registry,
}

#[async_trait]
impl SchemaProvider for WeirPgCatalog {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let table = self.inner.table(name).await?;
        Ok(match table {
            Some(t) if name == "pg_class" => Some(Arc::new(PgClass {
                inner: t,
                db: self.db.clone(),
            })),
            None if name == WEIR_COLUMNS => Some(Arc::new(PgColumns {
                db: self.db.clone(),
            })),
            other => other,
        })
    }

    fn table_exist(&self, name: &str) -> bool {
        name == WEIR_COLUMNS || self.inner.table_exist(name)
    }
}

#[derive(Debug)]
struct PgClass {
    inner: Arc<dyn TableProvider>,
    db: Registry,
}

#[async_trait]
impl TableProvider for PgClass {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let plan = self.inner.scan(state, None, &[], None).await?;
        let batches = datafusion::physical_plan::collect(plan, state.task_ctx()).await?;
        let schema = self.schema();
        let (Ok(kind), Ok(name)) = (schema.index_of("relkind"), schema.index_of("relname")) else {
            return Ok(MemorySourceConfig::try_new_exec(
                &[batches],
                schema,
                projection.cloned(),
            )?);
        };
        let views: Vec<String> = self.db.views().iter().map(|v| v.def.name.clone()).collect();
        let batches = batches
            .into_iter()
            .map(|b| {
                let kinds = b.column(kind).as_string::<i32>();
                let names = b.column(name).as_string::<i32>();
                let fixed: StringArray = (0..b.num_rows())
                    .map(|i| {
                        if kinds.is_null(i) {
                            None
                        } else if kinds.value(i) == "v"
                            && !names.is_null(i)
                            && views.iter().any(|v| v == names.value(i))
                        {
                            Some("m")
                        } else {
                            Some(kinds.value(i))
                        }
                    })
                    .collect();
                let mut columns: Vec<ArrayRef> = b.columns().to_vec();
                columns[kind] = Arc::new(fixed);
                RecordBatch::try_new(b.schema(), columns)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            schema,
            projection.cloned(),
        )?)
    }
}

/// Installs `pg_catalog` and the Postgres functions clients use into `ctx` (catalog `catalog`).
pub(crate) fn install(ctx: &SessionContext, catalog: &str, db: &Registry) {
    if let Err(e) = datafusion_pg_catalog::setup_pg_catalog(
        ctx,
        catalog,
        datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
    ) {
        tracing::error!(error = %e, "pg_catalog could not be set up; catalog queries will fail");
        return;
    }
    if let Some(c) = ctx.catalog(catalog) {
        if let Some(inner) = c.schema("pg_catalog") {
            let _ = c.register_schema(
                "pg_catalog",
                Arc::new(WeirPgCatalog {
                    inner,
                    db: db.clone(),
                }),
            );
        }
    }
    let text = |v: Option<&str>| ScalarValue::Utf8(v.map(str::to_string));
    for (name, value) in [
        ("pg_get_function_result", text(Some(""))),
        ("pg_get_function_arguments", text(Some(""))),
        ("pg_get_function_identity_arguments", text(Some(""))),
        ("obj_description", text(None)),
        ("col_description", text(None)),
        ("shobj_description", text(None)),
        ("pg_get_viewdef", text(None)),
        ("pg_get_serial_sequence", text(None)),
        ("pg_table_size", ScalarValue::Int64(None)),
        ("pg_database_size", ScalarValue::Int64(None)),
        ("pg_indexes_size", ScalarValue::Int64(None)),
    ] {
        ctx.register_udf(ScalarUDF::from(Constant {
            name,
            value,
            signature: Signature::variadic_any(Volatility::Stable),
        }));
    }
    ctx.register_udf(ScalarUDF::from(JsonBuildObject {
        signature: Signature::variadic_any(Volatility::Immutable),
    }));
    ctx.register_udf(datafusion::logical_expr::create_udf(
        "pg_size_pretty",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let sizes = arrays[0].as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let pretty: StringArray = sizes.iter().map(|v| v.map(size_pretty)).collect();
            Ok(ColumnarValue::Array(Arc::new(pretty)))
        }),
    ));
    for name in [
        "pg_function_is_visible",
        "pg_type_is_visible",
        "pg_collation_is_visible",
    ] {
        ctx.register_udf(ScalarUDF::from(AlwaysTrue {
            name,
            signature: Signature::any(1, Volatility::Stable),
        }));
    }
}
