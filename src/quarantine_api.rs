//! The quarantine's JSON API on the metrics listener (off by default):
//! `GET /quarantine`, `GET /quarantine/ID`, `POST /quarantine/ID/release`
//! and `DELETE /quarantine/ID`, each behind `Authorization: Bearer TOKEN`.
//! The operations are those of `smtpgate quarantine` ([`crate::quarantine_cli`]).

use crate::config::{ConfigError, ValidationError};
use crate::gateway::Gateway;
use crate::metrics::http::{Api, ApiRequest, ApiResponse};
use crate::quarantine::filter::parse_age;
use crate::quarantine::{valid_id, ListFilter, Quarantine};
use crate::quarantine_cli::{self, Releaser};
use futures::future::BoxFuture;
use futures::FutureExt;
use ring::digest::{digest, SHA256};
use serde_json::json;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The gateway in service at the time of a request.
type Current = Box<dyn Fn() -> Arc<Gateway> + Send + Sync>;

/// The API of the running gateway.
pub struct QuarantineApi {
    /// SHA-256 of the token: comparing digests in constant time tells
    /// nothing of the token, not even its length.
    token_digest: Vec<u8>,
    /// Where the quarantine directory, the upstream pool and the audit
    /// trail are taken from at each request, so they follow reloads.
    current: Current,
}

impl QuarantineApi {
    /// The API the gateway's configuration turns on
    /// (`metrics.quarantine_api`), or `None`. Requests act on the gateway
    /// `current` returns then: releases go through its upstream pool and
    /// audit trail. A token file that cannot be read is an error at its
    /// config line.
    pub fn for_gateway(
        gateway: &Arc<Gateway>,
        current: impl Fn() -> Arc<Gateway> + Send + Sync + 'static,
    ) -> Result<Option<Arc<dyn Api>>, ConfigError> {
        let config = &gateway.config;
        let Some(options) = config
            .metrics
            .as_ref()
            .and_then(|m| m.quarantine_api.as_ref())
        else {
            return Ok(None);
        };
        let token = options.read_token().map_err(|reason| {
            config.locate(ValidationError::new(
                "metrics.quarantine_api.token_file",
                reason,
            ))
        })?;
        Ok(Some(Arc::new(QuarantineApi {
            token_digest: digest(&SHA256, token.as_bytes()).as_ref().to_vec(),
            current: Box::new(current),
        })))
    }

    /// The quarantine of the gateway in service.
    fn quarantine(&self) -> Quarantine {
        Quarantine::new((self.current)().config.quarantine_dir.clone())
    }

    /// True when `authorization` is `Bearer <the token>`.
    fn authorized(&self, authorization: Option<&str>) -> bool {
        let Some(given) = authorization.and_then(|a| a.strip_prefix("Bearer ")) else {
            return false;
        };
        let given = digest(&SHA256, given.trim().as_bytes());
        given.as_ref().ct_eq(&self.token_digest).into()
    }

    async fn answer(&self, req: ApiRequest) -> ApiResponse {
        if !self.authorized(req.authorization.as_deref()) {
            return reply(401, json!({ "error": "a valid bearer token is required" }));
        }
        let quarantine = self.quarantine();
        let rest = req.path.strip_prefix("/quarantine").unwrap_or_default();
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        match (req.method.as_str(), parts.as_slice()) {
            ("GET", []) => list(&quarantine, req.query.as_deref()),
            (_, []) => reply(405, json!({ "error": "GET only" })),
            (method, [id, tail @ ..]) => {
                if let Err(e) = valid_id(id) {
                    return reply(400, json!({ "error": e.to_string() }));
                }
                match (method, tail) {
                    ("GET", []) => match quarantine_cli::show(&quarantine, id) {
                        Ok(shown) => reply(200, json!(shown)),
                        Err(e) => missing(&quarantine, id, e),
                    },
                    ("DELETE", []) => match quarantine_cli::delete(&quarantine, id) {
                        Ok(()) => reply(200, json!({ "deleted": id })),
                        Err(e) => missing(&quarantine, id, e),
                    },
                    ("POST", ["release"]) => self.release(id).await,
                    (_, []) | (_, ["release"]) => {
                        reply(405, json!({ "error": "method not allowed here" }))
                    }
                    _ => reply(404, json!({ "error": "not found" })),
                }
            }
        }
    }

    async fn release(&self, id: &str) -> ApiResponse {
        let Ok(releaser) = Releaser::for_gateway((self.current)()) else {
            return reply(
                409,
                json!({ "error": "no upstream is configured to release to" }),
            );
        };
        match self.quarantine().exists(id) {
            Ok(true) => {}
            Ok(false) => {
                return reply(
                    404,
                    json!({ "error": format!("no quarantined message {id:?}") }),
                )
            }
            Err(e) => return reply(400, json!({ "error": e.to_string() })),
        }
        match releaser.release(id, None, "api").await {
            Ok(upstream) => reply(200, json!({ "released": id, "upstream_reply": upstream })),
            Err(e) => reply(502, json!({ "error": e })),
        }
    }
}

impl Api for QuarantineApi {
    fn handle(&self, request: ApiRequest) -> BoxFuture<'_, ApiResponse> {
        self.answer(request).boxed()
    }
}

/// The entries `query` asks for.
fn list(quarantine: &Quarantine, query: Option<&str>) -> ApiResponse {
    let filter = match filter_of(query.unwrap_or_default()) {
        Ok(f) => f,
        Err(e) => return reply(400, json!({ "error": e })),
    };
    match quarantine_cli::list(quarantine, &filter) {
        Ok(entries) => reply(200, json!(entries)),
        Err(e) => reply(500, json!({ "error": e.to_string() })),
    }
}

/// 404 when the entry is not there, else 500 with the reason.
fn missing(q: &Quarantine, id: &str, error: String) -> ApiResponse {
    match q.exists(id) {
        Ok(false) => reply(404, json!({ "error": error })),
        _ => reply(500, json!({ "error": error })),
    }
}

fn reply(status: u16, body: serde_json::Value) -> ApiResponse {
    ApiResponse {
        status,
        body: format!("{body:#}\n"),
    }
}

/// The list filter from a query string (`since=2h&rule=NAME&from=TEXT`,
/// `%XX` and `+` decoded as forms encode them).
fn filter_of(query: &str) -> Result<ListFilter, String> {
    let mut filter = ListFilter::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        match key.as_ref() {
            "since" => filter.since = Some(parse_age(&value)?),
            "rule" => filter.rule = Some(value),
            "from" => filter.from = Some(value),
            other => {
                return Err(format!(
                    "unknown query parameter {other:?} (since, rule, from)"
                ))
            }
        }
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_filter_as_the_options_do() {
        let f = filter_of("since=2h&rule=hold&from=%40Example.org").unwrap();
        assert_eq!(f.since, Some(std::time::Duration::from_secs(7200)));
        assert_eq!(f.rule.as_deref(), Some("hold"));
        assert_eq!(f.from.as_deref(), Some("@Example.org"));
        assert!(filter_of("since=soon").is_err());
        assert!(filter_of("colour=red").is_err());
        let f = filter_of("from=a+b%20c").unwrap();
        assert_eq!(f.from.as_deref(), Some("a b c"));
    }

    #[test]
    fn only_the_exact_bearer_token_is_authorized() {
        let api = QuarantineApi {
            token_digest: digest(&SHA256, b"s3cret-token-0123456789")
                .as_ref()
                .to_vec(),
            current: Box::new(|| unreachable!("no request is answered")),
        };
        assert!(api.authorized(Some("Bearer s3cret-token-0123456789")));
        assert!(!api.authorized(Some("Bearer s3cret-token-012345678")));
        assert!(!api.authorized(Some("Basic s3cret-token-0123456789")));
        assert!(!api.authorized(None));
    }
}
