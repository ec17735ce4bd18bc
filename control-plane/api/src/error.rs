//! API errors as a kubectl user knows them: a reason (NotFound, AlreadyExists, Conflict, Invalid,
//! BadRequest...) and a message, carried over gRPC as a status code plus the `skiff-reason`
//! metadata entry.

use std::fmt;

/// The metadata key carrying the reason.
pub const REASON_KEY: &str = "skiff-reason";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    NotFound,
    AlreadyExists,
    Conflict,
    Invalid,
    BadRequest,
    Forbidden,
    Unavailable,
    /// The store did not confirm the write in time: it may or may not have been applied, so
    /// it is not retried on the caller's behalf (Kubernetes: 504, reason Timeout).
    Timeout,
    Internal,
    /// A list's continue token (or a watch's resourceVersion) is older than what the store
    /// keeps (Kubernetes: 410 Gone, reason Expired).
    Expired,
}

impl Reason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::NotFound => "NotFound",
            Reason::AlreadyExists => "AlreadyExists",
            Reason::Conflict => "Conflict",
            Reason::Invalid => "Invalid",
            Reason::BadRequest => "BadRequest",
            Reason::Forbidden => "Forbidden",
            Reason::Unavailable => "ServiceUnavailable",
            Reason::Timeout => "Timeout",
            Reason::Internal => "InternalError",
            Reason::Expired => "Expired",
        }
    }

    fn parse(s: &str) -> Option<Reason> {
        [
            Reason::NotFound,
            Reason::AlreadyExists,
            Reason::Conflict,
            Reason::Invalid,
            Reason::BadRequest,
            Reason::Forbidden,
            Reason::Unavailable,
            Reason::Timeout,
            Reason::Internal,
            Reason::Expired,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }

    fn code(&self) -> tonic::Code {
        match self {
            Reason::NotFound => tonic::Code::NotFound,
            Reason::AlreadyExists => tonic::Code::AlreadyExists,
            Reason::Conflict => tonic::Code::Aborted,
            Reason::Invalid | Reason::BadRequest => tonic::Code::InvalidArgument,
            Reason::Forbidden => tonic::Code::PermissionDenied,
            Reason::Unavailable => tonic::Code::Unavailable,
            Reason::Timeout => tonic::Code::DeadlineExceeded,
            Reason::Internal => tonic::Code::Internal,
            Reason::Expired => tonic::Code::OutOfRange,
        }
    }
}

/// An error answered by the API.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ApiError {
    pub reason: Reason,
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl ApiError {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Reason::BadRequest, message)
    }

    pub fn to_status(&self) -> tonic::Status {
        let mut status = tonic::Status::new(self.reason.code(), self.message.clone());
        if let Ok(v) = self.reason.as_str().parse() {
            status.metadata_mut().insert(REASON_KEY, v);
        }
        status
    }

    /// The error a status stands for. Statuses that carry no reason come from the transport (the
    /// server was not reached or went away) and count as Unavailable.
    pub fn from_status(status: &tonic::Status) -> Self {
        let reason = status
            .metadata()
            .get(REASON_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(Reason::parse);
        match reason {
            Some(reason) => Self::new(reason, status.message()),
            None => Self::new(
                if status.code() == tonic::Code::Unavailable {
                    Reason::Unavailable
                } else {
                    Reason::Internal
                },
                format!("{}: {}", code_name(status.code()), status.message()),
            ),
        }
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::DeadlineExceeded => "deadline exceeded",
        tonic::Code::Unimplemented => "unimplemented",
        _ => "error",
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        e.to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_survive_the_trip_through_a_status() {
        let e = ApiError::new(Reason::Conflict, "the object has been modified");
        let back = ApiError::from_status(&e.to_status());
        assert_eq!(back, e);
        assert_eq!(e.to_status().code(), tonic::Code::Aborted);
    }

    #[test]
    fn statuses_without_a_reason_are_transport_failures() {
        let e = ApiError::from_status(&tonic::Status::unavailable("tcp connect error"));
        assert_eq!(e.reason, Reason::Unavailable);
    }
}
