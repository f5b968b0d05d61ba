//! Test clocks: a frozen time that a test moves forward. Customers created on a clock (and
//! their subscriptions and invoices) are billed on the clock's time, not the wall clock's.
//!
//! `advance` moves the frozen time at once and leaves the clock `advancing` until the
//! scheduler has done every piece of work due up to the new time; then it is `ready`.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockStatus {
    #[default]
    Ready,
    Advancing,
}

impl ClockStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            ClockStatus::Ready => "ready",
            ClockStatus::Advancing => "advancing",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestClockCommand {
    Create {
        clock_id: String,
        frozen_time: i64,
        name: Option<String>,
        at: i64,
    },
    Advance {
        frozen_time: i64,
        at: i64,
    },
    /// The work due up to `frozen_time` is done.
    FinishAdvance {
        frozen_time: i64,
        at: i64,
    },
    Delete {
        at: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TestClockEvent {
    TestClockCreated {
        clock_id: String,
        frozen_time: i64,
        name: Option<String>,
        created: i64,
    },
    TestClockAdvancing {
        frozen_time: i64,
        at: i64,
    },
    TestClockReady {
        frozen_time: i64,
        at: i64,
    },
    TestClockDeleted {
        at: i64,
    },
}

impl DomainEvent for TestClockEvent {
    fn event_type(&self) -> String {
        match self {
            TestClockEvent::TestClockCreated { .. } => "TestClockCreated",
            TestClockEvent::TestClockAdvancing { .. } => "TestClockAdvancing",
            TestClockEvent::TestClockReady { .. } => "TestClockReady",
            TestClockEvent::TestClockDeleted { .. } => "TestClockDeleted",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TestClockError {
    #[error("test clock already exists")]
    AlreadyExists,
    #[error("no such test clock")]
    NotFound,
    #[error("The test clock is already advancing; wait until it is ready.")]
    Advancing,
    #[error("frozen_time must be after the clock's current time.")]
    NotForward,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestClock {
    pub id: String,
    pub name: Option<String>,
    pub frozen_time: i64,
    pub status: ClockStatus,
    pub created: i64,
    pub deleted: bool,
}

impl TestClock {
    pub fn exists(&self) -> bool {
        !self.id.is_empty() && !self.deleted
    }
}

impl Aggregate for TestClock {
    const TYPE: &'static str = "test_clock";
    type Command = TestClockCommand;
    type Event = TestClockEvent;
    type Error = TestClockError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            TestClockCommand::Create {
                clock_id,
                frozen_time,
                name,
                at,
            } => {
                if !self.id.is_empty() {
                    return Err(TestClockError::AlreadyExists);
                }
                sink.write(
                    TestClockEvent::TestClockCreated {
                        clock_id,
                        frozen_time,
                        name,
                        created: at,
                    },
                    self,
                )
                .await;
            }
            TestClockCommand::Advance { frozen_time, at } => {
                if !self.exists() {
                    return Err(TestClockError::NotFound);
                }
                if self.status == ClockStatus::Advancing {
                    return Err(TestClockError::Advancing);
                }
                if frozen_time <= self.frozen_time {
                    return Err(TestClockError::NotForward);
                }
                sink.write(TestClockEvent::TestClockAdvancing { frozen_time, at }, self)
                    .await;
            }
            TestClockCommand::FinishAdvance { frozen_time, at } => {
                // Only the advance that is running may finish (a stale worker's is a no-op).
                if self.exists()
                    && self.status == ClockStatus::Advancing
                    && frozen_time == self.frozen_time
                {
                    sink.write(TestClockEvent::TestClockReady { frozen_time, at }, self)
                        .await;
                }
            }
            TestClockCommand::Delete { at } => {
                if !self.exists() {
                    return Err(TestClockError::NotFound);
                }
                sink.write(TestClockEvent::TestClockDeleted { at }, self)
                    .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            TestClockEvent::TestClockCreated {
                clock_id,
                frozen_time,
                name,
                created,
            } => {
                self.id = clock_id;
                self.frozen_time = frozen_time;
                self.name = name;
                self.created = created;
            }
            TestClockEvent::TestClockAdvancing { frozen_time, .. } => {
                self.frozen_time = frozen_time;
                self.status = ClockStatus::Advancing;
            }
            TestClockEvent::TestClockReady { .. } => self.status = ClockStatus::Ready,
            TestClockEvent::TestClockDeleted { .. } => self.deleted = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(
        clock: &mut TestClock,
        command: TestClockCommand,
    ) -> Result<usize, TestClockError> {
        let sink = EventSink::default();
        clock.handle(command, &(), &sink).await?;
        Ok(sink.collect().await.len())
    }

    #[tokio::test]
    async fn advance_moves_forward_only_and_one_at_a_time() {
        let mut clock = TestClock::default();
        run(
            &mut clock,
            TestClockCommand::Create {
                clock_id: "clock_1".into(),
                frozen_time: 100,
                name: None,
                at: 1,
            },
        )
        .await
        .unwrap();
        assert_eq!(
            run(
                &mut clock,
                TestClockCommand::Advance {
                    frozen_time: 100,
                    at: 2
                }
            )
            .await,
            Err(TestClockError::NotForward)
        );
        run(
            &mut clock,
            TestClockCommand::Advance {
                frozen_time: 200,
                at: 2,
            },
        )
        .await
        .unwrap();
        assert_eq!(clock.status, ClockStatus::Advancing);
        assert_eq!(
            run(
                &mut clock,
                TestClockCommand::Advance {
                    frozen_time: 300,
                    at: 3
                }
            )
            .await,
            Err(TestClockError::Advancing)
        );
        // A stale finish (for another time) changes nothing.
        assert_eq!(
            run(
                &mut clock,
                TestClockCommand::FinishAdvance {
                    frozen_time: 150,
                    at: 3
                }
            )
            .await,
            Ok(0)
        );
        run(
            &mut clock,
            TestClockCommand::FinishAdvance {
                frozen_time: 200,
                at: 3,
            },
        )
        .await
        .unwrap();
        assert_eq!((clock.status, clock.frozen_time), (ClockStatus::Ready, 200));
    }
}
