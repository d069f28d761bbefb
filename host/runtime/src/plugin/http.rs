//! A request to an HTTP-triggered plugin and its answer, as the admin server hands them over.

/// An HTTP request for an HTTP-triggered plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// HTTP method, e.g. "GET".
    pub method: String,
    /// Path below `/plugins/<name>`, starting with `/`.
    pub path: String,
    /// Query string without the leading `?`; empty if none.
    pub query: String,
    /// Request headers as (name, value) pairs, in received order.
    pub headers: Vec<(String, String)>,
    /// Request body bytes.
    pub body: Vec<u8>,
}

/// The plugin's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// HTTP status code.
    pub status: u16,
    /// Response headers as (name, value) pairs.
    pub headers: Vec<(String, String)>,
    /// Response body bytes.
    pub body: Vec<u8>,
}
