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
            Some(t) if name == "pg_class" => Some(Arc::new(PgClass::new(t, self.db.clone()))),
            Some(t) if name == "pg_index" => Some(Arc::new(ShortArrays::new(
                t,
                &[
                    ("indkey", DataType::Int16),
                    ("indoption", DataType::Int16),
                    ("indclass", DataType::Int32),
                    ("indcollation", DataType::Int32),
                ],
            ))),
            Some(t) if name == "pg_constraint" => Some(Arc::new(ShortArrays::new(
                t,
                &[("conkey", DataType::Int16), ("confkey", DataType::Int16)],
            ))),
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

/// Every row of a (small, static) catalog table, to rewrite before serving it.
async fn all_rows(
    table: &Arc<dyn TableProvider>,
    state: &dyn DfSession,
) -> DfResult<Vec<RecordBatch>> {
    let plan = table.scan(state, None, &[], None).await?;
    datafusion::physical_plan::collect(plan, state.task_ctx()).await
}

/// `pg_class` with Weir's materialized views as such (`relkind` `m`), and with the
/// `reloptions` column (storage options; NULL, as Weir's relations have none) that
/// datafusion-pg-catalog's lacks and SQLAlchemy's index reflection reads.
#[derive(Debug)]
struct PgClass {
    inner: Arc<dyn TableProvider>,
    db: Registry,
    schema: SchemaRef,
}

impl PgClass {
    fn new(inner: Arc<dyn TableProvider>, db: Registry) -> Self {
        use datafusion::arrow::datatypes::{Field, Schema};
        let base = inner.schema();
        let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
        if base.index_of("reloptions").is_err() {
            fields.push(Field::new(
                "reloptions",
                DataType::new_list(DataType::Utf8, true),
                true,
            ));
        }
        let schema = Arc::new(Schema::new_with_metadata(fields, base.metadata().clone()));
        Self { inner, db, schema }
    }
}

#[async_trait]
impl TableProvider for PgClass {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
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
        let batches = all_rows(&self.inner, state).await?;
        let schema = self.schema();
        // The columns the inner table lacks, as NULLs.
        let batches = batches
            .into_iter()
            .map(|b| {
                let mut columns = b.columns().to_vec();
                for f in schema.fields().iter().skip(columns.len()) {
                    columns.push(datafusion::arrow::array::new_null_array(
                        f.data_type(),
                        b.num_rows(),
                    ));
                }
                RecordBatch::try_new(Arc::clone(&schema), columns)
            })
            .collect::<Result<Vec<_>, _>>()?;
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

/// The OID of a built-in PostgreSQL type by a name `to_regtype` accepts (its own, an SQL alias,
/// with `pg_catalog.` or not; `[]` for its array type), as `pg_type` has it; None for a type
/// PostgreSQL 15 does not have built in (an extension's `hstore`, which psycopg looks up).
fn builtin_type_oid(name: &str) -> Option<i32> {
    let name = name.trim().to_ascii_lowercase();
    let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
    let (base, array) = match name.strip_suffix("[]") {
        Some(b) => (b.trim_end(), true),
        None => (name, false),
    };
    let (oid, array_oid) = match base {
        "bool" | "boolean" => (16, 1000),
        "bytea" => (17, 1001),
        "char" | "\"char\"" => (18, 1002),
        "name" => (19, 1003),
        "int8" | "bigint" => (20, 1016),
        "int2" | "smallint" => (21, 1005),
        "int4" | "integer" | "int" => (23, 1007),
        "regproc" => (24, 1008),
        "text" => (25, 1009),
        "oid" => (26, 1028),
        "json" => (114, 199),
        "xml" => (142, 143),
        "float4" | "real" => (700, 1021),
        "float8" | "double precision" => (701, 1022),
        "bpchar" | "character" => (1042, 1014),
        "varchar" | "character varying" => (1043, 1015),
        "date" => (1082, 1182),
        "time" | "time without time zone" => (1083, 1183),
        "timestamp" | "timestamp without time zone" => (1114, 1115),
        "timestamptz" | "timestamp with time zone" => (1184, 1185),
        "interval" => (1186, 1187),
        "timetz" | "time with time zone" => (1266, 1270),
        "numeric" | "decimal" => (1700, 1231),
        "regclass" => (2205, 2210),
        "regtype" => (2206, 2211),
        "uuid" => (2950, 2951),
        "jsonb" => (3802, 3807),
        "record" => (2249, 2287),
        _ => return None,
    };
    Some(if array { array_oid } else { oid })
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
        // Weir's relations have no indexes; SQLAlchemy's index reflection names the function
        // in a branch for expression indexes that no row reaches.
        ("pg_get_indexdef", text(None)),
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
    ctx.register_udf(datafusion::logical_expr::create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let names = arrays[0].as_string::<i32>();
            let oids: datafusion::arrow::array::Int32Array =
                names.iter().map(|n| n.and_then(builtin_type_oid)).collect();
            Ok(ColumnarValue::Array(Arc::new(oids)))
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

/// A static catalog table whose number lists (`pg_index.indkey`, an int2vector, its
/// `indclass`, an oidvector, and `pg_constraint.conkey`, an int2[]) datafusion-pg-catalog keeps
/// as text (`1 2`, `[1, 2]`): here arrays, as in PostgreSQL, so that clients can `unnest` them
/// (SQLAlchemy's primary-key and index reflection do, for every table it reflects).
#[derive(Debug)]
struct ShortArrays {
    inner: Arc<dyn TableProvider>,
    columns: Vec<(usize, DataType)>,
    schema: SchemaRef,
}

impl ShortArrays {
    /// `inner` with each named text column as a list of the given element type.
    fn new(inner: Arc<dyn TableProvider>, names: &[(&str, DataType)]) -> Self {
        use datafusion::arrow::datatypes::{Field, Schema};
        let schema = inner.schema();
        let columns: Vec<(usize, DataType)> = names
            .iter()
            .filter_map(|(n, t)| Some((schema.index_of(n).ok()?, t.clone())))
            .filter(|(i, _)| schema.field(*i).data_type() == &DataType::Utf8)
            .collect();
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| match columns.iter().find(|(c, _)| *c == i) {
                Some((_, t)) => Field::new(
                    f.name(),
                    DataType::new_list(t.clone(), true),
                    f.is_nullable(),
                ),
                None => f.as_ref().clone(),
            })
            .collect();
        let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        Self {
            inner,
            columns,
            schema,
        }
    }
}

/// `1 2`, `[1, 2]` or `{1,2}` as a list of `element`; NULL stays NULL.
fn number_lists(texts: &StringArray, element: &DataType) -> DfResult<ArrayRef> {
    use datafusion::arrow::array::{Int64Builder, ListBuilder};
    let mut out = ListBuilder::new(Int64Builder::new());
    for text in texts.iter() {
        match text {
            None => out.append_null(),
            Some(t) => {
                let numbers = t
                    .split(|c: char| !(c.is_ascii_digit() || c == '-'))
                    .filter_map(|n| n.parse::<i64>().ok());
                for n in numbers {
                    out.values().append_value(n);
                }
                out.append(true);
            }
        }
    }
    let list: ArrayRef = Arc::new(out.finish());
    Ok(datafusion::arrow::compute::cast(
        &list,
        &DataType::new_list(element.clone(), true),
    )?)
}

#[async_trait]
impl TableProvider for ShortArrays {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
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
        let batches = all_rows(&self.inner, state).await?;
        let batches = batches
            .into_iter()
            .map(|b| {
                let mut columns: Vec<ArrayRef> = b.columns().to_vec();
                for (i, element) in &self.columns {
                    columns[*i] = number_lists(b.column(*i).as_string::<i32>(), element)?;
                }
                Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
            })
            .collect::<DfResult<Vec<_>>>()?;
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            self.schema(),
            projection.cloned(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::builtin_type_oid;

    #[test]
    fn to_regtype_knows_builtin_types_only() {
        assert_eq!(builtin_type_oid("int4"), Some(23));
        assert_eq!(
            builtin_type_oid("pg_catalog.Timestamp With Time Zone"),
            Some(1184)
        );
        assert_eq!(builtin_type_oid("text[]"), Some(1009));
        assert_eq!(builtin_type_oid("hstore"), None);
        assert_eq!(builtin_type_oid("hstore[]"), None);
    }
}
