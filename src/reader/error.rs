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

    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Timeout { .. } | Error::Connect { .. } => true,
            Error::Http { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}
