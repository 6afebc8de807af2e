//! Credentials sent with every call: `authorization: Bearer <token>` when the client has a
//! token (an opaque token from the server's policy file, or a JWT).
//!
//! The token is a [`tonic::service::Interceptor`] on every stub, so unary and streaming calls
//! (subscriptions, backups) carry it alike, and a redirect to the leader sends it again. The
//! header value is marked sensitive, so HTTP/2 never puts it in its header compression table.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A connection with the client's credentials attached to each request.
pub type Transport = InterceptedService<Channel, Credentials>;

/// What a client proves itself with; none by default.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    bearer: Option<MetadataValue<Ascii>>,
}

/// A token that cannot be sent as a header value (it holds a character other than visible
/// ASCII, or is empty).
#[derive(Debug, thiserror::Error)]
#[error("the token cannot be sent: it must be non-empty visible ASCII ({detail})")]
pub struct InvalidToken {
    detail: &'static str,
}

impl Credentials {
    /// Credentials that send `token` as a bearer token.
    pub fn bearer(token: &str) -> Result<Credentials, InvalidToken> {
        let token = token.trim();
        if token.is_empty() {
            return Err(InvalidToken {
                detail: "it is empty",
            });
        }
        if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(InvalidToken {
                detail: "it has a space, a control or a non-ASCII character",
            });
        }
        let mut value =
            MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| InvalidToken {
                detail: "not a header value",
            })?;
        value.set_sensitive(true);
        Ok(Credentials {
            bearer: Some(value),
        })
    }

    /// The channel with these credentials on every request.
    pub fn attach(&self, channel: Channel) -> Transport {
        InterceptedService::new(channel, self.clone())
    }
}

impl Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(bearer) = &self.bearer {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_and_sent_as_bearer() {
        assert!(Credentials::bearer("").is_err());
        assert!(Credentials::bearer("two words").is_err());
        let mut credentials = Credentials::bearer("s3cret").expect("a valid token");
        let request = credentials
            .call(tonic::Request::new(()))
            .expect("the interceptor passes");
        assert_eq!(
            request
                .metadata()
                .get("authorization")
                .and_then(|value| value.to_str().ok()),
            Some("Bearer s3cret")
        );
        let mut none = Credentials::default();
        let request = none.call(tonic::Request::new(())).expect("passes");
        assert!(request.metadata().get("authorization").is_none());
    }
}
