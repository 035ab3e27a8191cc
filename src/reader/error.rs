/// Why a request to Prometheus failed. Messages name the URL path, never credentials.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No answer within the configured timeout.
    #[error("timed out after {timeout_ms} ms waiting for {path}")]
    Timeout {
        /// API path.
        path: String,
        /// Timeout in ms.
        timeout_ms: u64,
    },
    /// The connection could not be made or broke.
    #[error("cannot connect to {path}: {message}")]
    Connect {
        /// API path.
        path: String,
        /// reqwest's description.
        message: String,
    },
    /// An HTTP error status.
    #[error("{path} answered HTTP {status}: {message}")]
    Http {
        /// API path.
        path: String,
        /// Status code.
        status: u16,
        /// Prometheus' error message or the start of the body.
        message: String,
    },
    /// The body exceeded `max_response_bytes`.
    #[error("{path} answered more than {limit} bytes (raise prometheus.max_response_bytes or narrow the query)")]
    TooLarge {
        /// API path.
        path: String,
        /// The cap.
        limit: u64,
    },
    /// The body is not the JSON Prometheus sends.
    #[error("cannot decode the answer of {path}: {message}")]
    Decode {
        /// API path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Prometheus answered `status: error` with HTTP 200 (some proxies do).
    #[error("Prometheus error {error_type}: {message}")]
    Prometheus {
        /// `errorType`.
        error_type: String,
        /// `error`.
        message: String,
    },
    /// Reading a credential file failed.
    #[error("cannot read credential file {path}: {message}")]
    Credentials {
        /// File.
        path: String,
        /// Cause.
        message: String,
    },
    /// The client could not be built (bad TLS material).
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
}

impl Error {
    /// A bounded label for `kpiwatch_query_errors_total{cause}`.
    pub fn cause(&self) -> &'static str {
        match self {
            Error::Timeout { .. } => "timeout",
            Error::Connect { .. } => "connect",
            Error::Http { status: 429, .. } => "http_429",
            Error::Http { status, .. } if *status >= 500 => "http_5xx",
            Error::Http { .. } => "http_4xx",
            Error::TooLarge { .. } => "too_large",
            Error::Decode { .. } => "decode",
            Error::Prometheus { .. } => "prometheus_error",
            Error::Credentials { .. } => "credentials",
            Error::Setup(_) => "setup",
        }
    }

    /// Whether the query itself is at fault, so that asking again fails again:
    /// Prometheus refused the expression (HTTP 400 `bad_data`, 422 `execution`, or
    /// `status: error` of those types with HTTP 200), or its answer is over
    /// `max_response_bytes`. A cycle scores its group without such a metric instead of
    /// failing every cycle for it; connection errors, timeouts, 429 and 5xx are not
    /// query faults (they pass, and the missed range is fetched then).
    pub fn is_query_fault(&self) -> bool {
        match self {
            Error::Http { status, .. } => matches!(status, 400 | 422),
            Error::Prometheus { error_type, .. } => {
                matches!(error_type.as_str(), "bad_data" | "execution")
            }
            Error::TooLarge { .. } => true,
            _ => false,
        }
    }

    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Timeout { .. } | Error::Connect { .. } => true,
            Error::Http { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Error;

    fn http(status: u16) -> Error {
        Error::Http {
            path: "api/v1/query_range".into(),
            status,
            message: String::new(),
        }
    }

    #[test]
    fn refused_and_oversized_queries_are_query_faults_and_transient_failures_are_not() {
        assert!(http(400).is_query_fault());
        assert!(http(422).is_query_fault());
        assert!(Error::TooLarge {
            path: String::new(),
            limit: 1
        }
        .is_query_fault());
        assert!(Error::Prometheus {
            error_type: "bad_data".into(),
            message: String::new()
        }
        .is_query_fault());
        for transient in [http(429), http(503), http(401)] {
            assert!(!transient.is_query_fault(), "{transient}");
        }
        assert!(!Error::Timeout {
            path: String::new(),
            timeout_ms: 1
        }
        .is_query_fault());
        assert!(!Error::Prometheus {
            error_type: "timeout".into(),
            message: String::new()
        }
        .is_query_fault());
    }
}
