//! Decoding of Prometheus API answers.

use serde::Deserialize;

use super::Error;
pub use crate::series::Series;

/// A decoded result with the warnings Prometheus attached.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueryResult {
    /// Series of the result.
    pub series: Vec<Series>,
    /// `warnings` of the answer (e.g. partial results from a federated store).
    pub warnings: Vec<String>,
}

impl QueryResult {
    /// Total number of samples.
    pub fn sample_count(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    data: Option<Data>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<ResultItem>,
}

/// One element of `result`. Decoded by its JSON shape rather than by `resultType`, so
/// that an answer whose keys come in another order (`result` before `resultType`, as a
/// proxy that re-serialises JSON may write it) streams the same way: serde's adjacently
/// tagged enums buffer the content into a generic tree when the tag comes second, one
/// allocation per sample.
enum ResultItem {
    /// A series of a matrix (`values`) or a vector (`value`).
    Series(RawSeries),
    /// The timestamp of a scalar or string result.
    Number(f64),
    /// The value of a scalar or string result.
    Text(String),
}

impl<'de> Deserialize<'de> for ResultItem {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ResultItem;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a series object, a timestamp or a value")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ResultItem, A::Error> {
                RawSeries::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ResultItem::Series)
            }

            fn visit_f64<E>(self, v: f64) -> Result<ResultItem, E> {
                Ok(ResultItem::Number(v))
            }

            fn visit_u64<E>(self, v: u64) -> Result<ResultItem, E> {
                Ok(ResultItem::Number(v as f64))
            }

            fn visit_i64<E>(self, v: i64) -> Result<ResultItem, E> {
                Ok(ResultItem::Number(v as f64))
            }

            fn visit_str<E>(self, v: &str) -> Result<ResultItem, E> {
                Ok(ResultItem::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct RawSeries {
    metric: std::collections::BTreeMap<String, String>,
    /// A matrix series' points.
    values: Option<Vec<RawPoint>>,
    /// A vector sample's point.
    value: Option<RawPoint>,
}

/// `[1435781451.781, "1"]`: seconds and the value as Prometheus writes it, a string.
/// The string is parsed as it is read (serde_json lends it without copying), so a
/// sample costs 16 bytes while an answer is decoded instead of a `String` each: at
/// warm-up an answer holds millions of them.
struct RawPoint(f64, f64);

impl<'de> Deserialize<'de> for RawPoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(PointVisitor)
    }
}

struct PointVisitor;

impl<'de> serde::de::Visitor<'de> for PointVisitor {
    type Value = RawPoint;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a [timestamp, \"value\"] pair")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawPoint, A::Error> {
        use serde::de::Error as _;
        let ts: f64 = seq
            .next_element()?
            .ok_or_else(|| A::Error::invalid_length(0, &self))?;
        let value: SampleValue = seq
            .next_element()?
            .ok_or_else(|| A::Error::invalid_length(1, &self))?;
        if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
            return Err(A::Error::invalid_length(3, &self));
        }
        Ok(RawPoint(ts, value.0))
    }
}

/// A sample value: a JSON string holding a number, `NaN`, `+Inf` or `-Inf`.
struct SampleValue(f64);

impl<'de> Deserialize<'de> for SampleValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SampleValue;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sample value as a string")
            }

            // Rust's f64 parser accepts "NaN", "+Inf", "-Inf" and "inf" but also
            // "infinity"; Prometheus writes only the first three, which is all that
            // matters here.
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SampleValue, E> {
                v.parse()
                    .map(SampleValue)
                    .map_err(|_| E::custom(format!("sample value {v:?} is not a number")))
            }
        }
        d.deserialize_str(V)
    }
}

/// Largest sample timestamp magnitude accepted, in milliseconds: 2^53 (about the year
/// 287,000), exact in an `f64` and far enough from `i64::MAX` that the store's step
/// arithmetic cannot overflow. Prometheus never answers beyond it; a proxy might.
pub(super) const MAX_TIMESTAMP_MS: f64 = 9_007_199_254_740_992.0;

fn point(p: RawPoint, path: &str) -> Result<(i64, f64), Error> {
    let ms = (p.0 * 1000.0).round();
    // `as i64` would saturate: 1e300 s would become i64::MAX ms.
    if !ms.is_finite() || ms.abs() > MAX_TIMESTAMP_MS {
        return Err(Error::Decode {
            path: path.to_string(),
            message: format!("sample timestamp {} s is out of range", p.0),
        });
    }
    Ok((ms as i64, p.1))
}

/// Decodes the body of a successful (HTTP 2xx) answer.
pub(super) fn decode(body: &[u8], path: &str) -> Result<QueryResult, Error> {
    let env: Envelope = serde_json::from_slice(body).map_err(|e| Error::Decode {
        path: path.to_string(),
        message: e.to_string(),
    })?;
    if env.status != "success" {
        return Err(Error::Prometheus {
            error_type: env.error_type.unwrap_or_else(|| "unknown".into()),
            message: env.error.unwrap_or_default(),
        });
    }
    let data = env.data.ok_or_else(|| Error::Decode {
        path: path.to_string(),
        message: "status success without data".into(),
    })?;
    let series = series_of(data, path)?;
    Ok(QueryResult {
        series,
        warnings: env.warnings,
    })
}

/// The series of a decoded `data`, checked against its `resultType`.
fn series_of(data: Data, path: &str) -> Result<Vec<Series>, Error> {
    let shape_error = |what: &str| Error::Decode {
        path: path.to_string(),
        message: format!("{} result {what}", data.result_type),
    };
    match data.result_type.as_str() {
        "matrix" | "vector" => {
            let matrix = data.result_type == "matrix";
            let mut series = Vec::with_capacity(data.result.len());
            for item in data.result {
                let ResultItem::Series(s) = item else {
                    return Err(shape_error("holds something other than series"));
                };
                let samples = match (matrix, s.values, s.value) {
                    // Same size and alignment: the points' buffer is reused in place.
                    (true, Some(values), _) => values
                        .into_iter()
                        .map(|p| point(p, path))
                        .collect::<Result<_, _>>()?,
                    (true, None, _) => Vec::new(),
                    (false, _, Some(p)) => vec![point(p, path)?],
                    (false, _, None) => return Err(shape_error("has a series without `value`")),
                };
                series.push(Series {
                    labels: s.metric.into_iter().collect(),
                    samples,
                });
            }
            Ok(series)
        }
        "scalar" | "string" => match data.result.as_slice() {
            [ResultItem::Number(ts), ResultItem::Text(v)] => {
                let value = v.parse().map_err(|_| Error::Decode {
                    path: path.to_string(),
                    message: format!("sample value {v:?} is not a number"),
                })?;
                Ok(vec![Series {
                    labels: Vec::new(),
                    samples: vec![point(RawPoint(*ts, value), path)?],
                }])
            }
            _ => Err(shape_error("is not a [timestamp, \"value\"] pair")),
        },
        other => Err(Error::Decode {
            path: path.to_string(),
            message: format!("unknown resultType {other:?}"),
        }),
    }
}

/// Extracts Prometheus' error message from an error answer, or the start of the body.
pub(super) fn error_message(body: &[u8]) -> String {
    if let Ok(env) = serde_json::from_slice::<Envelope>(body) {
        if let Some(e) = env.error {
            return match env.error_type {
                Some(t) => format!("{t}: {e}"),
                None => e,
            };
        }
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    text.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_matrix_with_special_values_and_warnings() {
        let body = br#"{"status":"success","warnings":["partial"],"data":{"resultType":"matrix","result":[
            {"metric":{"job":"a","instance":"x"},"values":[[1.5,"1"],[2.5,"NaN"],[3.5,"+Inf"],[4.5,"-Inf"]]}]}}"#;
        let r = decode(body, "/q").unwrap();
        assert_eq!(r.warnings, vec!["partial".to_string()]);
        let s = &r.series[0];
        assert_eq!(s.labels[0], ("instance".into(), "x".into()));
        assert_eq!(s.samples[0], (1500, 1.0));
        assert!(s.samples[1].1.is_nan());
        assert_eq!(s.samples[2].1, f64::INFINITY);
        assert_eq!(s.samples[3].1, f64::NEG_INFINITY);
        assert_eq!(r.sample_count(), 4);
    }

    #[test]
    fn decodes_vector_and_scalar() {
        let v = decode(br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[10,"2"]}]}}"#, "/q").unwrap();
        assert_eq!(v.series[0].samples, vec![(10_000, 2.0)]);
        let s = decode(
            br#"{"status":"success","data":{"resultType":"scalar","result":[10,"3"]}}"#,
            "/q",
        )
        .unwrap();
        assert_eq!(s.series[0].samples, vec![(10_000, 3.0)]);
    }

    #[test]
    fn key_order_does_not_change_the_result() {
        let tag_first = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"job":"a"},"values":[[1,"1"],[2,"2.5"]]},{"values":[[3,"NaN"]],"metric":{}}]}}"#;
        let tag_last = br#"{"data":{"result":[
            {"metric":{"job":"a"},"values":[[1,"1"],[2,"2.5"]]},{"values":[[3,"NaN"]],"metric":{}}],"resultType":"matrix"},"status":"success"}"#;
        let (a, b) = (
            decode(tag_first, "/q").unwrap(),
            decode(tag_last, "/q").unwrap(),
        );
        assert_eq!(a.series.len(), 2);
        assert_eq!(a.series[0], b.series[0]);
        assert_eq!(a.series[0].samples, vec![(1000, 1.0), (2000, 2.5)]);
        assert!(b.series[1].samples[0].1.is_nan());
        let scalar = decode(
            br#"{"status":"success","data":{"result":[10,"3"],"resultType":"scalar"}}"#,
            "/q",
        )
        .unwrap();
        assert_eq!(scalar.series[0].samples, vec![(10_000, 3.0)]);
    }

    #[test]
    fn rejects_results_whose_shape_contradicts_their_type() {
        for body in [
            &br#"{"status":"success","data":{"resultType":"matrix","result":[10,"3"]}}"#[..],
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{}}]}}"#,
            br#"{"status":"success","data":{"resultType":"scalar","result":[{"metric":{}}]}}"#,
            br#"{"status":"success","data":{"resultType":"string","result":[1,"hello"]}}"#,
            br#"{"status":"success","data":{"resultType":"histogram","result":[]}}"#,
            br#"{"status":"success","data":{"resultType":"matrix","result":[true]}}"#,
        ] {
            let e = decode(body, "/q").unwrap_err();
            assert_eq!(e.cause(), "decode", "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn rejects_garbage_and_reports_prometheus_errors() {
        assert_eq!(decode(b"<html>", "/q").unwrap_err().cause(), "decode");
        assert_eq!(decode(br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"abc"]]}]}}"#, "/q").unwrap_err().cause(), "decode");
        let e = decode(
            br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
            "/q",
        )
        .unwrap_err();
        assert_eq!(e.cause(), "prometheus_error");
        assert_eq!(
            error_message(br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#),
            "bad_data: parse error"
        );
        assert_eq!(error_message(b"  upstream down  "), "upstream down");
    }
}
