//! Sending one export request over OTLP/gRPC (tonic) or OTLP/HTTP
//! (protobuf over reqwest), and reading what the collector answered:
//! accepted (perhaps partly), refused for now (retry, perhaps after a
//! delay it named), or refused for good.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic_types::StatusExt;

use super::{Config, OtlpProtocol};

/// Longest response body read from an OTLP/HTTP collector.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// What the collector did with a request.
#[derive(Debug)]
pub(super) enum Answer {
    /// Accepted, but for `rejected` records (a partial success).
    Accepted { rejected: u64, message: String },
    /// Not accepted now: try again, after `after` if the collector said.
    Retry {
        after: Option<Duration>,
        message: String,
    },
    /// Not accepted, and sending it again would not help.
    Refused { message: String },
}

#[derive(Clone)]
pub(super) enum Transport {
    Grpc {
        client: tonic::client::Grpc<Channel>,
        metadata: MetadataMap,
    },
    Http {
        client: reqwest::Client,
        url: String,
        headers: reqwest::header::HeaderMap,
        gzip: bool,
    },
}

/// A transport checked and ready to connect (connecting needs the
/// runtime the export task runs on).
pub(super) enum Prepared {
    Grpc {
        endpoint: Box<Endpoint>,
        metadata: MetadataMap,
        gzip: bool,
    },
    Http(Transport),
}

impl Prepared {
    /// Checks the configuration and builds what can be built without a
    /// runtime. Connects lazily later: an absent collector is an export
    /// that fails (and is retried), not a start-up error.
    pub(super) fn new(config: &Config) -> Result<Self, (&'static str, String)> {
        match config.protocol {
            OtlpProtocol::Grpc => {
                let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
                    .map_err(|e| ("otlp.endpoint", format!("invalid OTLP endpoint: {e}")))?
                    .timeout(config.timeout)
                    .connect_timeout(config.timeout);
                if config.endpoint.starts_with("https://") {
                    let mut tls = ClientTlsConfig::new().with_native_roots();
                    if let Some(pem) = &config.ca_pem {
                        tls = tls.ca_certificate(Certificate::from_pem(pem));
                    }
                    endpoint = endpoint
                        .tls_config(tls)
                        .map_err(|e| ("otlp.tls", format!("OTLP TLS configuration: {e}")))?;
                }
                let mut metadata = MetadataMap::new();
                for (k, v) in &config.headers {
                    let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes()).map_err(
                        |_| {
                            (
                                "otlp.headers",
                                format!("OTLP header name `{k}` is not valid"),
                            )
                        },
                    )?;
                    let value = MetadataValue::try_from(v.as_str()).map_err(|_| {
                        (
                            "otlp.headers",
                            format!("the value of OTLP header `{k}` is not valid"),
                        )
                    })?;
                    metadata.insert(key, value);
                }
                Ok(Prepared::Grpc {
                    endpoint: Box::new(endpoint),
                    metadata,
                    gzip: config.gzip,
                })
            }
            OtlpProtocol::HttpProtobuf => {
                let mut builder = reqwest::Client::builder()
                    .timeout(config.timeout)
                    .connect_timeout(config.timeout);
                if let Some(pem) = &config.ca_pem {
                    let cert = reqwest::Certificate::from_pem(pem)
                        .map_err(|e| ("otlp.tls", format!("OTLP CA certificate: {e}")))?;
                    builder = builder.add_root_certificate(cert);
                }
                let client = builder
                    .build()
                    .map_err(|e| ("otlp", format!("OTLP HTTP client: {e}")))?;
                let mut headers = reqwest::header::HeaderMap::new();
                for (k, v) in &config.headers {
                    let name =
                        reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                            (
                                "otlp.headers",
                                format!("OTLP header name `{k}` is not valid"),
                            )
                        })?;
                    let mut value = reqwest::header::HeaderValue::from_str(v).map_err(|_| {
                        (
                            "otlp.headers",
                            format!("the value of OTLP header `{k}` is not valid"),
                        )
                    })?;
                    value.set_sensitive(true);
                    headers.insert(name, value);
                }
                Ok(Prepared::Http(Transport::Http {
                    client,
                    url: config.endpoint.clone(),
                    headers,
                    gzip: config.gzip,
                }))
            }
        }
    }

    /// The transport, on the export task's runtime.
    pub(super) fn connect(self) -> Transport {
        match self {
            Prepared::Grpc {
                endpoint,
                metadata,
                gzip,
            } => {
                let mut client = tonic::client::Grpc::new((*endpoint).connect_lazy())
                    .max_decoding_message_size(MAX_RESPONSE_BYTES);
                if gzip {
                    client = client
                        .send_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Gzip);
                }
                Transport::Grpc { client, metadata }
            }
            Prepared::Http(t) => t,
        }
    }
}

impl Transport {
    /// Sends an encoded `ExportLogsServiceRequest`.
    pub(super) async fn send(&mut self, request: &Bytes) -> Answer {
        match self {
            Transport::Grpc { client, metadata } => {
                if let Err(e) = client.ready().await {
                    return Answer::Retry {
                        after: None,
                        message: format!(
                            "OTLP/gRPC collector unreachable: {}",
                            bounded(&e.to_string())
                        ),
                    };
                }
                let mut req = tonic::Request::new(request.clone());
                *req.metadata_mut() = metadata.clone();
                let path = PathAndQuery::from_static(EXPORT_PATH);
                match client.unary(req, path, RawCodec).await {
                    Ok(response) => accepted(response.into_inner()),
                    Err(status) => grpc_failure(&status),
                }
            }
            Transport::Http {
                client,
                url,
                headers,
                gzip,
            } => {
                let body = request.clone();
                let mut req = client
                    .post(url.as_str())
                    .headers(headers.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf");
                req = if *gzip {
                    match gzip_bytes(&body[..]) {
                        Ok(z) => req
                            .header(reqwest::header::CONTENT_ENCODING, "gzip")
                            .body(z),
                        Err(e) => {
                            return Answer::Refused {
                                message: format!("gzip: {e}"),
                            };
                        }
                    }
                } else {
                    req.body(body)
                };
                match req.send().await {
                    Ok(response) => http_answer(response).await,
                    // Connection refused or reset, timeouts: worth another try.
                    Err(e) => Answer::Retry {
                        after: None,
                        message: format!("OTLP/HTTP request failed: {}", describe(e)),
                    },
                }
            }
        }
    }
}

/// The logs service's export method.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// Sends requests encoded beforehand as they are; decodes responses with
/// the generated type.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportLogsServiceResponse;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = ExportLogsServiceResponse;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        let bytes = src.copy_to_bytes(src.remaining());
        ExportLogsServiceResponse::decode(bytes)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("undecodable OTLP response: {e}")))
    }
}

fn accepted(response: ExportLogsServiceResponse) -> Answer {
    match response.partial_success {
        Some(p) if p.rejected_log_records > 0 || !p.error_message.is_empty() => Answer::Accepted {
            rejected: u64::try_from(p.rejected_log_records).unwrap_or(0),
            message: bounded(&p.error_message),
        },
        _ => Answer::Accepted {
            rejected: 0,
            message: String::new(),
        },
    }
}

/// The OTLP specification's retryable gRPC codes.
fn grpc_failure(status: &tonic::Status) -> Answer {
    use tonic::Code;
    let message = format!(
        "OTLP/gRPC export failed: {:?}: {}",
        status.code(),
        bounded(status.message())
    );
    // A status tonic made itself from a transport error (a connection
    // reset or refused mid-request) came from no collector: the request
    // may not have arrived, so it is worth another try.
    if std::error::Error::source(status).is_some() {
        return Answer::Retry {
            after: None,
            message,
        };
    }
    match status.code() {
        Code::Unavailable
        | Code::ResourceExhausted
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::DataLoss => Answer::Retry {
            after: status.get_details_retry_info().and_then(|r| r.retry_delay),
            message,
        },
        _ => Answer::Refused { message },
    }
}

async fn http_answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = read_bounded(response).await;
    if status.is_success() {
        return match ExportLogsServiceResponse::decode(body.as_slice()) {
            Ok(r) => accepted(r),
            // A body that is not a response (or none): accepted in full.
            Err(_) => Answer::Accepted {
                rejected: 0,
                message: String::new(),
            },
        };
    }
    let message = format!("OTLP/HTTP export failed: HTTP {}", status.as_u16());
    match status.as_u16() {
        429 | 502 | 503 | 504 => Answer::Retry {
            after: retry_after,
            message,
        },
        _ => Answer::Refused { message },
    }
}

async fn read_bounded(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            break;
        }
        body.extend_from_slice(&chunk);
    }
    body
}

/// `Retry-After`: seconds, or an HTTP date.
pub(super) fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn gzip_bytes(body: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut z = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    z.write_all(body)?;
    z.finish()
}

/// A reqwest error with its causes, without the URL (whose query could
/// hold a secret).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    bounded(&s)
}

/// A collector's message, cut to a sane length for stats and logs.
fn bounded(s: &str) -> String {
    const MAX: usize = 512;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
