//! API keys for both transports (`server.auth.api_keys_file`). The file lists sha256 hashes,
//! never keys, so a leaked settings volume leaks no key; a call's `Authorization: Bearer KEY`
//! is hashed and looked up. gRPC calls are checked by a tower layer in front of every service
//! but health (load balancers and Kubernetes probe it without keys); the HTTP API by a
//! middleware in front of every route. Keys are never logged: refusals say only that the key
//! is missing or unknown.

use std::{
    collections::HashSet,
    path::Path,
    sync::Arc,
    task::{Context, Poll},
};

use sha2::{Digest, Sha256};
use tonic::codegen::http;

/// The hashes of the keys that may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeys {
    hashes: Arc<HashSet<[u8; 32]>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("server.auth.api_keys_file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error(
        "server.auth.api_keys_file {path} line {line}: not a sha256 (64 hex digits); \
         write `printf %s KEY | sha256sum`, not the key"
    )]
    NotAHash { path: String, line: usize },
    #[error("server.auth.api_keys_file {path}: no key hashes in it")]
    Empty { path: String },
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Unknown,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Missing => {
                "an API key is required: send `Authorization: Bearer KEY` (server.auth is on)"
            }
            Refusal::Unknown => "the API key is not one of this server's keys",
        }
    }
}

fn from_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl ApiKeys {
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| AuthError::Read { path: shown.clone(), source })?;
        let mut hashes = HashSet::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // `sha256sum` writes "HASH  -": the first word is the hash.
            let word = line.split_whitespace().next().unwrap_or_default();
            let hash = from_hex(word)
                .ok_or(AuthError::NotAHash { path: shown.clone(), line: index + 1 })?;
            hashes.insert(hash);
        }
        if hashes.is_empty() {
            return Err(AuthError::Empty { path: shown });
        }
        Ok(Self { hashes: Arc::new(hashes) })
    }

    /// Whether the `Authorization` header's bearer key is one of the keys.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), Refusal> {
        let header = authorization.ok_or(Refusal::Missing)?;
        let key = header
            .strip_prefix(b"Bearer ")
            .or_else(|| header.strip_prefix(b"bearer "))
            .ok_or(Refusal::Missing)?;
        let hash: [u8; 32] = Sha256::digest(key.trim_ascii()).into();
        if self.hashes.contains(&hash) { Ok(()) } else { Err(Refusal::Unknown) }
    }
}

/// The gRPC side: refuses calls without a valid key with UNAUTHENTICATED, health excepted.
#[derive(Clone)]
pub struct GrpcAuthLayer {
    keys: Option<ApiKeys>,
}

impl GrpcAuthLayer {
    pub fn new(keys: Option<ApiKeys>) -> Self {
        Self { keys }
    }
}

impl<S> tower::Layer<S> for GrpcAuthLayer {
    type Service = GrpcAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcAuth { inner, keys: self.keys.clone() }
    }
}

#[derive(Clone)]
pub struct GrpcAuth<S> {
    inner: S,
    keys: Option<ApiKeys>,
}

/// Health answers anyone: probes carry no keys.
const OPEN_GRPC_PREFIX: &str = "/grpc.health.v1.Health/";

impl<S, B, R> tower::Service<http::Request<B>> for GrpcAuth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::Either<
        S::Future,
        futures::future::Ready<Result<http::Response<R>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let refused = match &self.keys {
            Some(keys) if !request.uri().path().starts_with(OPEN_GRPC_PREFIX) => {
                let header = request.headers().get(http::header::AUTHORIZATION);
                keys.check(header.map(|v| v.as_bytes())).err()
            }
            _ => None,
        };
        match refused {
            None => futures::future::Either::Left(self.inner.call(request)),
            Some(refusal) => {
                let status = tonic::Status::unauthenticated(refusal.message());
                futures::future::Either::Right(futures::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> Result<ApiKeys, AuthError> {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        ApiKeys::load(file.path())
    }

    #[test]
    fn keys_are_checked_by_their_hash() {
        // printf %s segredo | sha256sum
        let hash = hex(&Sha256::digest(b"segredo"));
        let keys = keys(&format!("# equipa A\n\n{hash}  -\n")).unwrap();
        assert_eq!(keys.check(Some(b"Bearer segredo")), Ok(()));
        assert_eq!(keys.check(Some(b"Bearer outro")), Err(Refusal::Unknown));
        assert_eq!(keys.check(Some(b"Basic segredo")), Err(Refusal::Missing));
        assert_eq!(keys.check(None), Err(Refusal::Missing));
    }

    #[test]
    fn a_file_with_a_key_instead_of_a_hash_is_refused_by_line() {
        let error = keys("# keys\nsegredo\n").unwrap_err().to_string();
        assert!(error.contains("line 2: not a sha256"), "{error}");
        assert!(!error.contains("segredo"), "the key is not repeated: {error}");
        assert!(keys("# none\n").unwrap_err().to_string().contains("no key hashes"));
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
