//! Property-based fuzzing of the Prometheus answer decoder (issue 21): edited real
//! answers (`query_range` matrices, `query` vectors and scalars, `series` lists, error
//! answers, warnings) and arbitrary bytes decode to a bounded result or to a typed
//! error with a bounded cause, never a panic. Case counts: `tests/it/fuzz/mutate.rs`.

use proptest::prelude::*;

use super::response::{decode, error_message, MAX_TIMESTAMP_MS};

// Shared with the integration suites and the other unit suites (each test binary
// compiles its own copy, as each suite needs only a part).
#[allow(clippy::duplicate_mod)]
#[path = "../../tests/it/fuzz/mutate.rs"]
mod mutate;

const PATH: &str = "api/v1/query_range";

/// Answers as Prometheus writes them, special values and warnings included.
const SEEDS: &[&str] = &[
    r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"node_load1","instance":"10.0.0.7:9100","job":"node"},"values":[[1738328400,"0.52"],[1738328415,"0.61"],[1738328430,"NaN"],[1738328445,"+Inf"],[1738328460,"-Inf"],[1738328475.5,"1e-3"]]},{"metric":{"instance":"10.0.0.8:9100","job":"node"},"values":[[1738328400,"3"],[1738328415,"4.25"]]}]}}"#,
    r#"{"status":"success","warnings":["PromQL info: metric might not be a counter","partial response"],"data":{"resultType":"vector","result":[{"metric":{"route":"/search"},"value":[1738328400.123,"12.5"]},{"metric":{},"value":[1738328400.123,"0"]}]}}"#,
    r#"{"status":"success","data":{"resultType":"scalar","result":[1738328400,"1"]}}"#,
    r#"{"status":"success","data":{"resultType":"string","result":[1738328400,"hello"]}}"#,
    r#"{"status":"success","data":[{"__name__":"up","instance":"a","job":"node"},{"__name__":"up","instance":"b","job":"node"}]}"#,
    r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected \"}\""}"#,
    r#"{"status":"error","errorType":"execution","error":"query processing would load too many samples into memory in query execution","warnings":["w"]}"#,
];

/// A decoded answer holds no more than its bytes can spell: every sample takes at
/// least `[0,"0"]` (7 bytes), every series `{"metric":{}}`.
fn assert_bounded(body: &[u8], r: &super::QueryResult) -> Result<(), TestCaseError> {
    prop_assert!(
        r.sample_count() <= body.len() / 7 + 1,
        "{} samples",
        r.sample_count()
    );
    prop_assert!(r.series.len() <= body.len() / 7 + 1);
    let label_bytes: usize = r
        .series
        .iter()
        .flat_map(|s| &s.labels)
        .map(|(k, v)| k.len() + v.len())
        .sum();
    prop_assert!(label_bytes <= body.len());
    for (ts, _) in r.series.iter().flat_map(|s| &s.samples) {
        prop_assert!(ts.unsigned_abs() <= 1 << 53, "timestamp {ts} ms");
    }
    Ok(())
}

proptest! {
    #![proptest_config(mutate::config(2000))]

    /// Edited answers decode (bounded) or fail as `decode` / `prometheus_error`, the
    /// decode errors naming the endpoint.
    #[test]
    fn edited_answers_decode_or_fail_typed(
        body in mutate::mutated(SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect(), 4)
    ) {
        match decode(&body, PATH) {
            Ok(r) => assert_bounded(&body, &r)?,
            Err(e) => {
                prop_assert!(matches!(e.cause(), "decode" | "prometheus_error"), "{e}");
                if e.cause() == "decode" {
                    prop_assert!(e.to_string().contains(PATH), "{e}");
                }
            }
        }
        let msg = error_message(&body);
        prop_assert!(msg.len() <= body.len() * 3 + 16);
    }

    /// Arbitrary bytes: a typed error or a bounded result.
    #[test]
    fn arbitrary_bytes_decode_or_fail_typed(body in prop::collection::vec(any::<u8>(), 0..512)) {
        match decode(&body, PATH) {
            Ok(r) => assert_bounded(&body, &r)?,
            Err(e) => prop_assert!(matches!(e.cause(), "decode" | "prometheus_error"), "{e}"),
        }
        let _ = error_message(&body);
    }

    /// Generated matrices decode to exactly the series, labels and samples written.
    #[test]
    fn generated_matrices_decode_as_written(
        series in prop::collection::vec(
            (
                prop::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,10}", "\\PC{0,10}", 0..4),
                prop::collection::vec((0i64..4_000_000_000_000, any::<f64>()), 0..8),
            ),
            0..5,
        ),
    ) {
        let result: Vec<serde_json::Value> = series
            .iter()
            .map(|(labels, samples)| {
                let values: Vec<serde_json::Value> = samples
                    .iter()
                    .map(|&(ms, v)| {
                        // Prometheus' spellings of the special values.
                        let text = if v.is_nan() {
                            "NaN".to_string()
                        } else if v == f64::INFINITY {
                            "+Inf".to_string()
                        } else if v == f64::NEG_INFINITY {
                            "-Inf".to_string()
                        } else {
                            v.to_string()
                        };
                        serde_json::json!([ms as f64 / 1000.0, text])
                    })
                    .collect();
                serde_json::json!({"metric": labels, "values": values})
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({
            "status": "success",
            "data": {"resultType": "matrix", "result": result},
        }))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let r = decode(&body, PATH).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(r.series.len(), series.len());
        for (got, (labels, samples)) in r.series.iter().zip(&series) {
            let want: Vec<(String, String)> = labels.clone().into_iter().collect();
            prop_assert_eq!(&got.labels, &want);
            prop_assert_eq!(got.samples.len(), samples.len());
            for (&(gt, gv), &(wt, wv)) in got.samples.iter().zip(samples) {
                prop_assert_eq!(gt, wt);
                prop_assert!(gv.to_bits() == wv.to_bits() || (gv.is_nan() && wv.is_nan()));
            }
        }
    }
}

/// Nesting far beyond serde_json's recursion limit (128) is a decode error, not a stack
/// overflow, wherever it starts.
#[test]
fn deep_nesting_is_a_decode_error() {
    for prefix in [
        "",
        r#"{"status":"success","data":"#,
        r#"{"status":"success","data":{"resultType":"matrix","result":"#,
        r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"#,
    ] {
        for open in ["[", "{\"a\":"] {
            let body = format!("{prefix}{}", open.repeat(100_000));
            let e = decode(body.as_bytes(), PATH).expect_err("refused");
            assert_eq!(e.cause(), "decode", "{e}");
        }
    }
}

/// Found by `edited_answers_decode_or_fail_typed`: a timestamp of `1e300` s decoded to
/// `i64::MAX` ms (a saturating cast), on which the store's step alignment overflows.
/// Timestamps beyond 2^53 ms are now a decode error.
#[test]
fn out_of_range_timestamps_are_decode_errors() {
    for t in ["1e300", "-1e300", "1e16", "-9007199254741"] {
        let body = format!(
            r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{}},"values":[[{t},"1"]]}}]}}}}"#
        );
        let e = decode(body.as_bytes(), PATH).expect_err(t);
        assert_eq!(e.cause(), "decode", "{e}");
        assert!(e.to_string().contains("out of range"), "{e}");
    }
    let edge = MAX_TIMESTAMP_MS / 1000.0;
    let body = format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[{edge},"1"]}}]}}}}"#
    );
    let r = decode(body.as_bytes(), PATH).expect("the largest timestamp decodes");
    assert_eq!(r.series[0].samples[0].0, 1 << 53);
}
