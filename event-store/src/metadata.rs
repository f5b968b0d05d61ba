//! What every event carries besides its payload: who, why, and under which request.

use serde::{Deserialize, Serialize};

/// Test or live: decided by the API key, carried by every event so that test data never
/// reaches a live read model or gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Test,
    Live,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Test => "test",
            Mode::Live => "live",
        }
    }

    pub fn is_live(self) -> bool {
        self == Mode::Live
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "test" => Ok(Mode::Test),
            "live" => Ok(Mode::Live),
            other => Err(format!("mode must be test or live, not {other:?}")),
        }
    }
}

/// Stored as the `metadata` JSON object of each event. All values are strings so that the
/// column stays readable by postgres-es (`HashMap<String, String>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EventMetadata {
    /// The project that owns the stream; every read is scoped by it.
    #[serde(default)]
    pub project: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// `req_…` of the HTTP request, or the job run that caused the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Who acted: `key:<key id>`, `operator:<id>`, `system:<worker>`.
    #[serde(default)]
    pub actor: String,
    /// Groups every event that one outside request caused, across streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The event or command that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
}

impl EventMetadata {
    pub fn new(project: impl Into<String>, mode: Mode, actor: impl Into<String>) -> Self {
        Self {
            project: project.into(),
            mode: Some(mode),
            actor: actor.into(),
            ..Self::default()
        }
    }

    pub fn with_request(mut self, request_id: impl Into<String>) -> Self {
        let request_id = request_id.into();
        if self.correlation_id.is_none() {
            self.correlation_id = Some(request_id.clone());
        }
        self.request_id = Some(request_id);
        self
    }

    pub fn with_idempotency_key(mut self, key: Option<String>) -> Self {
        self.idempotency_key = key;
        self
    }

    pub fn caused_by(mut self, causation_id: impl Into<String>) -> Self {
        self.causation_id = Some(causation_id.into());
        self
    }
}
