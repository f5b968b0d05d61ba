//! A project's billing settings: read by invoicing ([`billing_settings`]) and changed by the
//! operator ([`configure_billing`], `calmony projects configure`). They live in the project's
//! own stream (`BillingConfigured`), so they are read from the log, never from a read model.

use cqrs_es::Aggregate;
use domain::project::{BillingChanges, BillingSettings, Project, ProjectCommand, ProjectError};
use domain::tax_rate::TaxRate;
use event_store::store::AsOf;
use event_store::EventMetadata;

use crate::execute::{CommandBus, CommandError};

#[derive(Debug, thiserror::Error)]
pub enum ProjectSettingsError {
    #[error("no such project: {0}")]
    UnknownProject(String),
    #[error("{tax_rate} is not a tax rate of project {project}")]
    ForeignTaxRate { tax_rate: String, project: String },
    #[error("tax rate {0} is archived: reactivate it or choose an active one")]
    ArchivedTaxRate(String),
    #[error(transparent)]
    Rejected(ProjectError),
    #[error("{0}")]
    Load(String),
}

impl From<CommandError<ProjectError>> for ProjectSettingsError {
    fn from(error: CommandError<ProjectError>) -> Self {
        match error {
            CommandError::Rejected(rule) => ProjectSettingsError::Rejected(rule),
            other => ProjectSettingsError::Load(other.to_string()),
        }
    }
}

/// The billing settings in force for `project_id`: as last configured, or the defaults
/// (derived invoice prefix, no default tax rate, three retries one day apart).
pub async fn billing_settings(
    bus: &CommandBus,
    project_id: &str,
) -> Result<BillingSettings, ProjectSettingsError> {
    let (project, _) = bus.load::<Project>(project_id, AsOf::Now).await?;
    if !project.exists() {
        return Err(ProjectSettingsError::UnknownProject(project_id.to_string()));
    }
    Ok(project.billing_settings())
}

/// Changes `project_id`'s billing settings and returns them as they now are. A new default
/// tax rate must be an active tax rate of this project (of either mode: settings are the
/// project's, and invoicing applies the rate only in its own mode).
pub async fn configure_billing(
    bus: &CommandBus,
    project_id: &str,
    changes: BillingChanges,
    metadata: &EventMetadata,
) -> Result<BillingSettings, ProjectSettingsError> {
    if let Some(Some(tax_rate)) = &changes.default_tax_rate {
        check_tax_rate(bus, project_id, tax_rate).await?;
    }
    let executed = bus
        .execute::<Project>(
            project_id,
            ProjectCommand::ConfigureBilling {
                changes,
                at: chrono::Utc::now().timestamp(),
            },
            &(),
            metadata,
        )
        .await
        .map_err(|error| match error {
            CommandError::Rejected(ProjectError::NotFound) => {
                ProjectSettingsError::UnknownProject(project_id.to_string())
            }
            other => other.into(),
        })?;
    Ok(executed.aggregate.billing_settings())
}

/// `tax_rate` exists, belongs to `project_id` (the first event of its stream says so, as
/// `PaymentService::load_owned` checks ownership) and is active.
async fn check_tax_rate(
    bus: &CommandBus,
    project_id: &str,
    tax_rate: &str,
) -> Result<(), ProjectSettingsError> {
    let foreign = || ProjectSettingsError::ForeignTaxRate {
        tax_rate: tax_rate.to_string(),
        project: project_id.to_string(),
    };
    let events = bus
        .store()
        .load_stream(TaxRate::TYPE, tax_rate, AsOf::Now)
        .await
        .map_err(|error| ProjectSettingsError::Load(error.to_string()))?;
    let owned = events
        .first()
        .and_then(|event| event.metadata().ok())
        .is_some_and(|metadata| metadata.project == project_id);
    if !owned {
        return Err(foreign());
    }
    let (rate, _) = bus
        .fold::<TaxRate>(&events)
        .map_err(|error| ProjectSettingsError::Load(error.to_string()))?;
    if !rate.exists() {
        return Err(foreign());
    }
    if !rate.active {
        return Err(ProjectSettingsError::ArchivedTaxRate(tax_rate.to_string()));
    }
    Ok(())
}
