//! CREATE STREAM (with columns, over a Kafka topic, or AS SELECT), CREATE SINK and DROP STREAM.

use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr as SqlExpr, Statement};
use weir_engine::log::supports_key_type;

use super::Handler;
use crate::catalog::{ColumnDef, KafkaEndpoint, StreamDef, WatermarkDef};
use crate::output::Output;
use crate::plan::{ViewOptions, compile_query_statement, name_columns};
use crate::syntax::{CreateStream, normalize};
use crate::time::interval_ns;
use crate::{Error, Result};

impl Handler {
    pub(crate) async fn create_stream(&self, mut cs: CreateStream) -> Result<Output> {
        if let Some(done) = self.existing(&cs.name, cs.if_not_exists, "CREATE STREAM")? {
            return Ok(done);
        }
        if let Some(query) = cs.query.take() {
            return self.create_stream_as(cs, *query, None).await;
        }
        if cs.columns.is_empty() {
            return Err(Error::Syntax("a stream needs at least one column".into()));
        }
        let explicit_partitions = cs.options.iter().any(|(k, _)| k == "partitions");
        let mut def = self.stream_def(cs).await?;
        if let Some(source) = def.source.clone() {
            // The stream mirrors the topic's partitions, so that each topic offset is kept with
            // the rows it became, in the partition of the same number.
            let n = self
                .blocking(move |db| db.connector_factory()?.topic_partitions(&source))
                .await?;
            if explicit_partitions && def.partitions != n {
                return Err(Error::WrongObject {
                    sqlstate: "22023",
                    message: format!(
                        "topic {} has {n} partitions, and a stream read from it has as many; \
                         leave out partitions = {}",
                        def.source.as_ref().map_or("", |s| s.topic.as_str()),
                        def.partitions
                    ),
                });
            }
            def.partitions = n;
        }
        self.blocking(move |db| db.create_stream(def)).await?;
        Ok(Output::Command("CREATE STREAM".into()))
    }

    /// `CREATE SINK name INTO KAFKA WITH (brokers = ..., topic = ..., ...) AS SELECT ...`: a
    /// stream of the query's results (as `CREATE STREAM ... AS SELECT`, taking the other
    /// options), delivered to the topic as they are appended.
    pub(crate) async fn create_sink(&self, mut cs: CreateStream) -> Result<Output> {
        if let Some(done) = self.existing(&cs.name, cs.if_not_exists, "CREATE SINK")? {
            return Ok(done);
        }
        let mut brokers = None;
        let mut topic = None;
        cs.options.retain(|(k, v)| match k.as_str() {
            "brokers" => {
                brokers = Some(v.clone());
                false
            }
            "topic" => {
                topic = Some(v.clone());
                false
            }
            _ => true,
        });
        let (Some(brokers), Some(topic)) = (brokers, topic) else {
            return Err(Error::WrongObject {
                sqlstate: "22023",
                message: "a Kafka sink needs WITH (brokers = 'host:port', topic = '...')".into(),
            });
        };
        let sink = KafkaEndpoint {
            brokers,
            topic,
            start: None,
        };
        let query = cs
            .query
            .take()
            .ok_or_else(|| Error::Internal("CREATE SINK without a query".into()))?;
        let probe = sink.clone();
        self.blocking(move |db| db.connector_factory()?.topic_partitions(&probe))
            .await?;
        self.create_stream_as(cs, *query, Some(sink)).await?;
        Ok(Output::Command("CREATE SINK".into()))
    }

    /// Resolves SQL types, the watermark and the options of a CREATE STREAM.
    async fn stream_def(&self, cs: CreateStream) -> Result<StreamDef> {
        let casts: Vec<String> = cs
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("CAST(NULL AS {}) AS c{i}", c.data_type))
            .collect();
        let plan = self
            .ctx
            .state()
            .create_logical_plan(&format!("SELECT {}", casts.join(", ")))
            .await
            .map_err(|e| Error::Datatype(format!("unsupported column type: {e}")))?;
        let mut columns = Vec::with_capacity(cs.columns.len());
        for (c, f) in cs.columns.iter().zip(plan.schema().fields()) {
            if columns.iter().any(|x: &ColumnDef| x.name == c.name) {
                return Err(Error::DuplicateRelation(format!("column {}", c.name)));
            }
            columns.push(ColumnDef {
                name: c.name.clone(),
                data_type: f.data_type().to_string(),
                nullable: !c.not_null,
            });
        }
        let watermark = match &cs.watermark {
            None => None,
            Some((column, expr)) => {
                let Some(i) = columns.iter().position(|c| &c.name == column) else {
                    return Err(Error::UndefinedColumn(format!(
                        "watermark column \"{column}\" does not exist"
                    )));
                };
                let t = plan.schema().field(i).data_type();
                if !matches!(t, DataType::Timestamp(_, _)) {
                    return Err(Error::Datatype(format!(
                        "watermark column {column} must be a TIMESTAMP, not {t}"
                    )));
                }
                // Event time drives windows: a row without one could never be placed.
                columns[i].nullable = false;
                let delay_ns = self.watermark_delay(column, expr).await?;
                Some(WatermarkDef {
                    column: column.clone(),
                    delay_ns,
                })
            }
        };
        let types: Vec<DataType> = plan
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let mut def = StreamDef::new(cs.name.clone(), columns, watermark);
        apply_stream_options(&mut def, &cs.options, &types)?;
        Ok(def)
    }

    /// `CREATE STREAM name [WITH (...)] AS SELECT ...`: a stream with the query's columns,
    /// and the query appending its results to it. Only results that never change can be
    /// appended; the stream's watermark follows the query's window ends or event time.
    async fn create_stream_as(
        &self,
        cs: CreateStream,
        query: Statement,
        sink: Option<KafkaEndpoint>,
    ) -> Result<Output> {
        if let Some((k, _)) = cs
            .options
            .iter()
            .find(|(k, _)| ["connector", "brokers", "topic", "start"].contains(&k.as_str()))
        {
            return Err(Error::WrongObject {
                sqlstate: "22023",
                message: format!(
                    "option {k}: a stream made AS SELECT holds its query's results and reads no \
                     Kafka topic; to deliver results to Kafka use CREATE SINK name INTO KAFKA"
                ),
            });
        }
        let mut query = query;
        name_columns(&mut query)?;
        let text = query.to_string();
        let compiled =
            compile_query_statement(&self.ctx.state(), query, ViewOptions::default()).await?;
        if compiled.key.is_some() || compiled.changelog {
            return Err(Error::NotSupported(
                "a stream holds rows that never change, but this query's results change \
                 (an aggregate without a window, or EMIT ON UPDATE); use CREATE MATERIALIZED VIEW"
                    .into(),
            ));
        }
        let schema = compiled.schema();
        let mut columns: Vec<ColumnDef> = Vec::with_capacity(schema.fields().len());
        for f in schema.fields() {
            if columns.iter().any(|c| &c.name == f.name()) {
                return Err(Error::DuplicateRelation(format!(
                    "column {} (give the query's columns distinct names with AS)",
                    f.name()
                )));
            }
            columns.push(ColumnDef {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
                nullable: f.is_nullable(),
            });
        }
        let watermark = compiled.watermark.map(|(i, delay_ns)| {
            columns[i].nullable = false;
            WatermarkDef {
                column: columns[i].name.clone(),
                delay_ns,
            }
        });
        let types: Vec<DataType> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let mut def = StreamDef::new(cs.name.clone(), columns, watermark);
        def.query = Some(text);
        def.sink = sink;
        apply_stream_options(&mut def, &cs.options, &types)?;
        self.blocking(move |db| db.create_stream_as(def, compiled))
            .await?;
        Ok(Output::Command("CREATE STREAM".into()))
    }

    /// The delay of `WATERMARK FOR col AS col - INTERVAL '...'` (or `AS col`: no delay).
    async fn watermark_delay(&self, column: &str, expr: &SqlExpr) -> Result<i64> {
        let bad = || {
            Error::Syntax(format!(
                "WATERMARK FOR {column} AS must be {column} or {column} - INTERVAL '...', not {expr}"
            ))
        };
        let is_col = |e: &SqlExpr| matches!(e, SqlExpr::Identifier(i) if normalize(i) == column);
        match expr {
            e if is_col(e) => Ok(0),
            SqlExpr::BinaryOp {
                left,
                op: BinaryOperator::Minus,
                right,
            } if is_col(left) => {
                let plan = self
                    .ctx
                    .state()
                    .create_logical_plan(&format!("SELECT {right}"))
                    .await?;
                let LogicalPlan::Projection(p) = &plan else {
                    return Err(bad());
                };
                let delay = p.expr.first().and_then(|e| match e {
                    Expr::Alias(a) => interval_ns(&a.expr),
                    e => interval_ns(e),
                });
                delay.filter(|d| *d >= 0).ok_or_else(bad)
            }
            _ => Err(bad()),
        }
    }

    /// `DROP STREAM [IF EXISTS] name [CASCADE]`.
    pub(crate) async fn drop_stream(
        &self,
        name: String,
        if_exists: bool,
        cascade: bool,
    ) -> Result<Output> {
        if self.db.stream(&name).is_none() && if_exists {
            return Ok(Output::Command("DROP STREAM".into()));
        }
        self.blocking(move |db| db.drop_stream(&name, cascade))
            .await?;
        Ok(Output::Command("DROP STREAM".into()))
    }
}

/// Applies the `WITH` options of a CREATE STREAM; `types` are the column types.
fn apply_stream_options(
    def: &mut StreamDef,
    options: &[(String, String)],
    types: &[DataType],
) -> Result<()> {
    let bad = |message: String| Error::WrongObject {
        sqlstate: "22023",
        message,
    };
    let mut connector = None;
    let mut brokers = None;
    let mut topic = None;
    let mut start = None;
    {
        for (k, v) in options {
            let int = |max: u64| -> Result<u64> {
                v.parse::<u64>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| Error::WrongObject {
                        sqlstate: "22023",
                        message: format!("option {k} must be an integer from 1 to {max}, not {v}"),
                    })
            };
            match k.as_str() {
                "partitions" => def.partitions = int(1024)? as u32,
                "key" => {
                    let key = v.to_lowercase();
                    let Some(i) = def.column_index(&key) else {
                        return Err(Error::UndefinedColumn(format!(
                            "key column \"{key}\" does not exist"
                        )));
                    };
                    let t = &types[i];
                    if !supports_key_type(t) {
                        return Err(Error::Datatype(format!(
                            "a stream cannot be partitioned by column {key} of type {t}"
                        )));
                    }
                    def.key = Some(key);
                }
                "segment_bytes" => def.segment_bytes = int(1 << 40)?,
                "retention_ms" => def.retention_ms = Some(int(i64::MAX as u64)? as i64),
                "retention_bytes" => def.retention_bytes = Some(int(u64::MAX)?),
                "idle_timeout_ms" => def.idle_timeout_ms = int(u64::MAX)?,
                "format" => {
                    if !v.eq_ignore_ascii_case("json") {
                        return Err(Error::WrongObject {
                            sqlstate: "22023",
                            message: format!(
                                "unknown stream format {v}; known: json (each Kafka record value \
                                 is one JSON object)"
                            ),
                        });
                    }
                    def.format = Some("json".into());
                }
                "connector" => {
                    if !v.eq_ignore_ascii_case("kafka") {
                        return Err(bad(format!(
                            "unknown connector {v}; known: kafka (a topic of an external Kafka cluster)"
                        )));
                    }
                    connector = Some(v.to_lowercase());
                }
                "brokers" => {
                    if v.trim().is_empty() {
                        return Err(bad("option brokers needs host:port[,host:port...]".into()));
                    }
                    brokers = Some(v.clone());
                }
                "topic" => {
                    if v.is_empty() {
                        return Err(bad("option topic needs a topic name".into()));
                    }
                    topic = Some(v.clone());
                }
                "start" => {
                    let s = v.to_lowercase();
                    if s != "earliest" && s != "latest" {
                        return Err(bad(format!(
                            "option start must be 'earliest' or 'latest', not {v}"
                        )));
                    }
                    start = Some(s);
                }
                other => {
                    return Err(Error::WrongObject {
                        sqlstate: "22023",
                        message: format!(
                            "unknown stream option {other}; known: partitions, key, format, segment_bytes, retention_ms, retention_bytes, idle_timeout_ms, connector, brokers, topic, start"
                        ),
                    });
                }
            }
        }
    }
    match (connector, brokers, topic) {
        (None, None, None) if start.is_none() => {}
        (Some(_), Some(brokers), Some(topic)) => {
            def.source = Some(KafkaEndpoint {
                brokers,
                topic,
                start,
            });
        }
        (Some(_), _, _) => {
            return Err(bad(
                "connector = 'kafka' needs brokers = 'host:port' and topic = '...'".into(),
            ));
        }
        (None, _, _) => {
            return Err(bad(
                "options brokers, topic and start belong to connector = 'kafka'".into(),
            ));
        }
    }
    Ok(())
}
