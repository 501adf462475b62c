//! strom-client: a small async Kafka client over `kafka-protocol`. One [`Connection`] is one
//! TCP connection to one broker; it negotiates versions with ApiVersions and sends typed
//! requests at the highest version both sides support. [`admin::Admin`] builds the
//! operator's admin calls on top: bootstrap, routing, connection reuse and retries;
//! [`rebalance`] runs strom-core's rebalance plans with them.

pub mod admin;
pub mod rebalance;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

/// Responses larger than this are refused rather than buffered.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to the broker failed: {0}")]
    Connect(std::io::Error),
    #[error("i/o with the broker failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the broker did not answer within {0:?}")]
    Timeout(Duration),
    #[error("encoding the request failed: {0}")]
    Encode(String),
    #[error("decoding the response failed: {0}")]
    Decode(String),
    #[error("the broker supports no version of API {0:?} that this client knows")]
    UnsupportedApi(ApiKey),
    #[error("the response's correlation id {got} does not match the request's {expected}")]
    CorrelationMismatch { expected: i32, got: i32 },
    #[error("the response announces {0} bytes, more than this client accepts")]
    ResponseTooLarge(usize),
}

impl Error {
    /// Whether trying again (on a new connection) may succeed: the network failed or the
    /// broker was slow, as opposed to a request or response this client cannot handle.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Error::Connect(_) | Error::Io(_) | Error::Timeout(_))
    }
}

/// One connection to one broker, with the version ranges it announced.
pub struct Connection {
    stream: TcpStream,
    client_id: StrBytes,
    next_correlation_id: i32,
    versions: HashMap<i16, (i16, i16)>,
    timeout: Duration,
}

impl Connection {
    /// Connects and negotiates versions with ApiVersions.
    pub async fn connect(addr: impl ToSocketAddrs, client_id: &str) -> Result<Self, Error> {
        Self::connect_with_timeout(addr, client_id, Duration::from_secs(30)).await
    }

    /// Connects and negotiates versions, waiting at most `timeout` for the connection and
    /// for each response.
    pub async fn connect_with_timeout(
        addr: impl ToSocketAddrs,
        client_id: &str,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Timeout(timeout))?
            .map_err(Error::Connect)?;
        stream.set_nodelay(true)?;
        let mut conn = Connection {
            stream,
            client_id: StrBytes::from_string(client_id.to_owned()),
            next_correlation_id: 1,
            versions: HashMap::new(),
            timeout,
        };
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("strom-client"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let resp = conn.send_versioned(req, 3).await?;
        for k in resp.api_keys {
            conn.versions
                .insert(k.api_key, (k.min_version, k.max_version));
        }
        Ok(conn)
    }

    /// Sets how long one request may wait for its response.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The version range the broker announced for `key`, if any.
    pub fn broker_versions(&self, key: ApiKey) -> Option<(i16, i16)> {
        self.versions.get(&(key as i16)).copied()
    }

    /// The version `send` uses for `R`: the highest both this client and the broker
    /// support. Callers whose request shape differs between versions build it for this.
    pub fn version_for<R: Request>(&self) -> Result<i16, Error> {
        let key = ApiKey::try_from(R::KEY).map_err(|_| Error::Encode("unknown key".into()))?;
        let (bmin, bmax) = self
            .broker_versions(key)
            .ok_or(Error::UnsupportedApi(key))?;
        let version = bmax.min(R::VERSIONS.max);
        if version < bmin.max(R::VERSIONS.min) {
            return Err(Error::UnsupportedApi(key));
        }
        Ok(version)
    }

    /// Sends `req` at the highest version both this client and the broker support.
    pub async fn send<R: Request>(&mut self, req: R) -> Result<R::Response, Error> {
        let version = self.version_for::<R>()?;
        self.send_versioned(req, version).await
    }

    /// Sends `req` at exactly `version`.
    pub async fn send_versioned<R: Request>(
        &mut self,
        req: R,
        version: i16,
    ) -> Result<R::Response, Error> {
        let key = ApiKey::try_from(R::KEY).map_err(|_| Error::Encode("unknown key".into()))?;
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, key.request_header_version(version))
            .map_err(|e| Error::Encode(e.to_string()))?;
        req.encode(&mut body, version)
            .map_err(|e| Error::Encode(e.to_string()))?;
        let frame = self.round_trip(body.freeze()).await?;
        let mut frame = frame;
        let resp_header = ResponseHeader::decode(&mut frame, key.response_header_version(version))
            .map_err(|e| Error::Decode(e.to_string()))?;
        if resp_header.correlation_id != correlation_id {
            return Err(Error::CorrelationMismatch {
                expected: correlation_id,
                got: resp_header.correlation_id,
            });
        }
        R::Response::decode(&mut frame, version).map_err(|e| Error::Decode(e.to_string()))
    }

    /// Writes one size-prefixed frame and reads the size-prefixed answer.
    async fn round_trip(&mut self, body: Bytes) -> Result<Bytes, Error> {
        let timeout = self.timeout;
        let fut = async {
            let mut out = BytesMut::with_capacity(body.len() + 4);
            out.put_u32(body.len() as u32);
            out.put_slice(&body);
            self.stream.write_all(&out).await?;
            let mut len = [0u8; 4];
            self.stream.read_exact(&mut len).await?;
            let len = (&len[..]).get_u32() as usize;
            if len > MAX_RESPONSE_BYTES {
                return Err(Error::ResponseTooLarge(len));
            }
            let mut buf = vec![0u8; len];
            self.stream.read_exact(&mut buf).await?;
            Ok(Bytes::from(buf))
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| Error::Timeout(timeout))?
    }
}
