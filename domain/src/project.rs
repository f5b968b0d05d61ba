//! A project: one merchant's account. Owns its API keys (stored as hashes only) and its
//! billing settings (invoice prefix, default tax rate, seller details, brand colour,
//! dunning schedule), which hold for both modes.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// The dunning schedule when a project never set one: three retries, one day apart
/// (STRIPE-CONVENTIONS.md, "Dunning").
pub const DEFAULT_DUNNING_RETRY_DAYS: [u32; 3] = [1, 1, 1];
/// Most retries a dunning schedule may have (Stripe's Smart Retries allow 8 tries).
pub const MAX_DUNNING_RETRIES: usize = 8;
/// Longest wait before one retry, in days.
pub const MAX_DUNNING_RETRY_GAP_DAYS: u32 = 30;
/// Bounds on the seller's details shown on invoices.
pub const MAX_SELLER_ADDRESS_LINES: usize = 6;
pub const MAX_SELLER_TEXT_CHARS: usize = 200;
/// Characters of an invoice prefix (Stripe's rule for a customer's `invoice_prefix`).
pub const INVOICE_PREFIX_CHARS: std::ops::RangeInclusive<usize> = 3..=12;
/// Characters of the invoice prefix a project gets by default.
pub const DEFAULT_INVOICE_PREFIX_CHARS: usize = 8;

/// Who issues the invoices, as printed on them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SellerDetails {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub address_lines: Vec<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// The seller's VAT or other tax registration number.
    #[serde(default)]
    pub tax_id: Option<String>,
}

/// How a project bills: what invoicing reads (`commands::project_settings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingSettings {
    /// Invoice numbers are `<prefix>-<sequence>`: 3 to 12 characters, A-Z and 0-9.
    pub invoice_prefix: String,
    /// A tax rate (`txr_…`) of this project applied to invoice lines that name none.
    #[serde(default)]
    pub default_tax_rate: Option<String>,
    #[serde(default)]
    pub seller: SellerDetails,
    /// `#rrggbb`, lowercase, for invoices and hosted pages.
    #[serde(default)]
    pub brand_color: Option<String>,
    /// Days to wait before each automatic retry of a failed renewal charge, in order.
    pub dunning_retry_days: Vec<u32>,
    /// What the acquirer keeps of each capture before settling (none by default): the
    /// settlements expected from now on are net of it, and the journal books it as fees.
    #[serde(default)]
    pub acquirer_fee: Option<crate::settlement::FeeRule>,
}

impl BillingSettings {
    /// The settings of a project that never configured billing.
    pub fn defaults_for(project_id: &str) -> Self {
        Self {
            invoice_prefix: default_invoice_prefix(project_id),
            default_tax_rate: None,
            seller: SellerDetails::default(),
            brand_color: None,
            dunning_retry_days: DEFAULT_DUNNING_RETRY_DAYS.to_vec(),
            acquirer_fee: None,
        }
    }
}

/// The invoice prefix a project gets by default: 8 characters of A-Z and 0-9 derived from
/// its id (FNV-1a, in base 36). It is not stored until billing is first configured, so this
/// derivation must never change (pinned by a test).
pub fn default_invoice_prefix(project_id: &str) -> String {
    const ALPHABET: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in project_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let mut prefix = [b'0'; DEFAULT_INVOICE_PREFIX_CHARS];
    for slot in prefix.iter_mut().rev() {
        *slot = ALPHABET[(hash % 36) as usize];
        hash /= 36;
    }
    prefix.iter().map(|byte| char::from(*byte)).collect()
}

/// What `ConfigureBilling` changes. `None` leaves a setting alone; `Some(None)` clears an
/// optional one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BillingChanges {
    pub invoice_prefix: Option<String>,
    pub default_tax_rate: Option<Option<String>>,
    pub seller_name: Option<Option<String>>,
    /// Replaces every line.
    pub seller_address_lines: Option<Vec<String>>,
    pub seller_email: Option<Option<String>>,
    pub seller_tax_id: Option<Option<String>>,
    pub brand_color: Option<Option<String>>,
    pub dunning_retry_days: Option<Vec<u32>>,
    pub acquirer_fee: Option<Option<crate::settlement::FeeRule>>,
}

impl BillingChanges {
    /// `current` with these changes made (brand colours lowercased).
    pub fn applied_to(&self, current: &BillingSettings) -> BillingSettings {
        let mut next = current.clone();
        if let Some(prefix) = &self.invoice_prefix {
            next.invoice_prefix = prefix.clone();
        }
        if let Some(tax_rate) = &self.default_tax_rate {
            next.default_tax_rate = tax_rate.clone();
        }
        if let Some(name) = &self.seller_name {
            next.seller.name = name.clone();
        }
        if let Some(lines) = &self.seller_address_lines {
            next.seller.address_lines = lines.clone();
        }
        if let Some(email) = &self.seller_email {
            next.seller.email = email.clone();
        }
        if let Some(tax_id) = &self.seller_tax_id {
            next.seller.tax_id = tax_id.clone();
        }
        if let Some(color) = &self.brand_color {
            next.brand_color = color.as_ref().map(|color| color.to_ascii_lowercase());
        }
        if let Some(days) = &self.dunning_retry_days {
            next.dunning_retry_days = days.clone();
        }
        if let Some(fee) = self.acquirer_fee {
            next.acquirer_fee = fee;
        }
        next
    }
}

fn validate_billing(settings: &BillingSettings) -> Result<(), ProjectError> {
    let prefix = &settings.invoice_prefix;
    if !INVOICE_PREFIX_CHARS.contains(&prefix.len())
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return Err(ProjectError::BadInvoicePrefix(prefix.clone()));
    }
    if let Some(tax_rate) = &settings.default_tax_rate {
        if !tax_rate.starts_with("txr_") {
            return Err(ProjectError::BadDefaultTaxRate(tax_rate.clone()));
        }
    }
    if let Some(color) = &settings.brand_color {
        let hex = color.strip_prefix('#').unwrap_or("");
        if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ProjectError::BadBrandColor(color.clone()));
        }
    }
    let days = &settings.dunning_retry_days;
    if days.len() > MAX_DUNNING_RETRIES
        || days
            .iter()
            .any(|gap| !(1..=MAX_DUNNING_RETRY_GAP_DAYS).contains(gap))
    {
        return Err(ProjectError::BadDunningSchedule);
    }
    if let Some(fee) = &settings.acquirer_fee {
        fee.validate().map_err(ProjectError::BadAcquirerFee)?;
    }
    let seller = &settings.seller;
    if seller.address_lines.len() > MAX_SELLER_ADDRESS_LINES {
        return Err(ProjectError::TooManyAddressLines);
    }
    let texts = [
        ("seller name", seller.name.as_deref()),
        ("seller email", seller.email.as_deref()),
        ("seller tax id", seller.tax_id.as_deref()),
    ];
    for (field, text) in texts.into_iter().chain(
        seller
            .address_lines
            .iter()
            .map(|line| ("seller address line", Some(line.as_str()))),
    ) {
        match text {
            Some(text) if text.trim().is_empty() => {
                return Err(ProjectError::EmptySellerField(field))
            }
            Some(text) if text.chars().count() > MAX_SELLER_TEXT_CHARS => {
                return Err(ProjectError::SellerFieldTooLong(field))
            }
            _ => {}
        }
    }
    if let Some(email) = &seller.email {
        let shaped = email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !email.contains(char::is_whitespace)
        });
        if !shaped {
            return Err(ProjectError::BadSellerEmail(email.clone()));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectCommand {
    Create {
        project_id: String,
        name: String,
        at: i64,
    },
    CreateApiKey {
        key_id: String,
        livemode: bool,
        /// Lowercase hex SHA-256 of the whole secret; the secret itself never arrives here.
        secret_hash: String,
        /// What operators see to tell keys apart: `sk_test_…abcd`.
        display: String,
        at: i64,
    },
    RevokeApiKey {
        key_id: String,
        at: i64,
    },
    /// The caller has checked that a new `default_tax_rate` is a tax rate of this project.
    ConfigureBilling {
        changes: BillingChanges,
        at: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProjectEvent {
    ProjectCreated {
        project_id: String,
        name: String,
        created: i64,
    },
    ApiKeyCreated {
        key_id: String,
        livemode: bool,
        secret_hash: String,
        display: String,
        created: i64,
    },
    ApiKeyRevoked {
        key_id: String,
        at: i64,
    },
    /// The billing settings as they are from now on, whole.
    BillingConfigured {
        settings: BillingSettings,
        at: i64,
    },
}

impl DomainEvent for ProjectEvent {
    fn event_type(&self) -> String {
        match self {
            ProjectEvent::ProjectCreated { .. } => "ProjectCreated",
            ProjectEvent::ApiKeyCreated { .. } => "ApiKeyCreated",
            ProjectEvent::ApiKeyRevoked { .. } => "ApiKeyRevoked",
            ProjectEvent::BillingConfigured { .. } => "BillingConfigured",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectError {
    #[error("project already exists")]
    AlreadyExists,
    #[error("no such project")]
    NotFound,
    #[error("project name must be 1 to 200 characters")]
    BadName,
    #[error("no such API key: {0}")]
    UnknownKey(String),
    #[error("API key {0} is already revoked")]
    AlreadyRevoked(String),
    #[error("API key {0} already exists")]
    DuplicateKey(String),
    #[error("invoice prefix {0:?} must be 3 to 12 characters of A-Z and 0-9")]
    BadInvoicePrefix(String),
    #[error("default tax rate {0:?} is not a tax rate id (txr_…)")]
    BadDefaultTaxRate(String),
    #[error("brand colour {0:?} must be #rrggbb")]
    BadBrandColor(String),
    #[error("the dunning schedule may have at most {MAX_DUNNING_RETRIES} retries, each 1 to {MAX_DUNNING_RETRY_GAP_DAYS} days after the last attempt")]
    BadDunningSchedule,
    #[error("the seller's address may have at most {MAX_SELLER_ADDRESS_LINES} lines")]
    TooManyAddressLines,
    #[error("{0} must not be blank")]
    EmptySellerField(&'static str),
    #[error("{0} is too long (at most {MAX_SELLER_TEXT_CHARS} characters)")]
    SellerFieldTooLong(&'static str),
    #[error("seller email {0:?} is not an email address")]
    BadSellerEmail(String),
    #[error(transparent)]
    BadAcquirerFee(crate::settlement::FeeRuleError),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub key_id: String,
    pub livemode: bool,
    pub display: String,
    pub created: i64,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub created: i64,
    pub keys: Vec<ApiKey>,
    /// `None` until billing is first configured: see [`Project::billing_settings`].
    #[serde(default)]
    pub billing: Option<BillingSettings>,
}

impl Project {
    pub fn exists(&self) -> bool {
        !self.id.is_empty()
    }

    /// The billing settings in force: as last configured, or the defaults.
    pub fn billing_settings(&self) -> BillingSettings {
        self.billing
            .clone()
            .unwrap_or_else(|| BillingSettings::defaults_for(&self.id))
    }
}

impl Aggregate for Project {
    const TYPE: &'static str = "project";
    type Command = ProjectCommand;
    type Event = ProjectEvent;
    type Error = ProjectError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            ProjectCommand::Create {
                project_id,
                name,
                at,
            } => {
                if !self.id.is_empty() {
                    return Err(ProjectError::AlreadyExists);
                }
                let name = name.trim().to_string();
                if name.is_empty() || name.chars().count() > 200 {
                    return Err(ProjectError::BadName);
                }
                sink.write(
                    ProjectEvent::ProjectCreated {
                        project_id,
                        name,
                        created: at,
                    },
                    self,
                )
                .await;
            }
            ProjectCommand::CreateApiKey {
                key_id,
                livemode,
                secret_hash,
                display,
                at,
            } => {
                if self.id.is_empty() {
                    return Err(ProjectError::NotFound);
                }
                if self.keys.iter().any(|key| key.key_id == key_id) {
                    return Err(ProjectError::DuplicateKey(key_id));
                }
                sink.write(
                    ProjectEvent::ApiKeyCreated {
                        key_id,
                        livemode,
                        secret_hash,
                        display,
                        created: at,
                    },
                    self,
                )
                .await;
            }
            ProjectCommand::RevokeApiKey { key_id, at } => {
                let key = self
                    .keys
                    .iter()
                    .find(|key| key.key_id == key_id)
                    .ok_or_else(|| ProjectError::UnknownKey(key_id.clone()))?;
                if key.revoked_at.is_some() {
                    return Err(ProjectError::AlreadyRevoked(key_id));
                }
                sink.write(ProjectEvent::ApiKeyRevoked { key_id, at }, self)
                    .await;
            }
            ProjectCommand::ConfigureBilling { changes, at } => {
                if !self.exists() {
                    return Err(ProjectError::NotFound);
                }
                let settings = changes.applied_to(&self.billing_settings());
                validate_billing(&settings)?;
                sink.write(ProjectEvent::BillingConfigured { settings, at }, self)
                    .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ProjectEvent::ProjectCreated {
                project_id,
                name,
                created,
            } => {
                self.id = project_id;
                self.name = name;
                self.created = created;
            }
            ProjectEvent::ApiKeyCreated {
                key_id,
                livemode,
                display,
                created,
                ..
            } => self.keys.push(ApiKey {
                key_id,
                livemode,
                display,
                created,
                revoked_at: None,
            }),
            ProjectEvent::ApiKeyRevoked { key_id, at } => {
                if let Some(key) = self.keys.iter_mut().find(|key| key.key_id == key_id) {
                    key.revoked_at = Some(at);
                }
            }
            ProjectEvent::BillingConfigured { settings, .. } => self.billing = Some(settings),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn created() -> ProjectEvent {
        ProjectEvent::ProjectCreated {
            project_id: "proj_1".into(),
            name: "Acme".into(),
            created: 1,
        }
    }

    fn key_created() -> ProjectEvent {
        ProjectEvent::ApiKeyCreated {
            key_id: "key_1".into(),
            livemode: false,
            secret_hash: "ab".into(),
            display: "sk_test_…abcd".into(),
            created: 2,
        }
    }

    #[test]
    fn keys_need_a_project_and_revoke_once() {
        TestFramework::<Project>::with(())
            .given_no_previous_events()
            .when(ProjectCommand::RevokeApiKey {
                key_id: "key_1".into(),
                at: 3,
            })
            .then_expect_error(ProjectError::UnknownKey("key_1".into()));
        TestFramework::<Project>::with(())
            .given(vec![created(), key_created()])
            .when(ProjectCommand::RevokeApiKey {
                key_id: "key_1".into(),
                at: 3,
            })
            .then_expect_events(vec![ProjectEvent::ApiKeyRevoked {
                key_id: "key_1".into(),
                at: 3,
            }]);
        TestFramework::<Project>::with(())
            .given(vec![
                created(),
                key_created(),
                ProjectEvent::ApiKeyRevoked {
                    key_id: "key_1".into(),
                    at: 3,
                },
            ])
            .when(ProjectCommand::RevokeApiKey {
                key_id: "key_1".into(),
                at: 4,
            })
            .then_expect_error(ProjectError::AlreadyRevoked("key_1".into()));
    }

    #[test]
    fn a_project_needs_a_name() {
        TestFramework::<Project>::with(())
            .given_no_previous_events()
            .when(ProjectCommand::Create {
                project_id: "proj_1".into(),
                name: "  ".into(),
                at: 1,
            })
            .then_expect_error(ProjectError::BadName);
    }

    fn configure(changes: BillingChanges) -> ProjectCommand {
        ProjectCommand::ConfigureBilling { changes, at: 5 }
    }

    #[test]
    fn billing_defaults_until_configured() {
        let mut project = Project::default();
        project.apply(created());
        let settings = project.billing_settings();
        assert_eq!(settings.dunning_retry_days, vec![1, 1, 1]);
        assert_eq!(settings.default_tax_rate, None);
        assert_eq!(settings.invoice_prefix.len(), 8);
        assert!(settings
            .invoice_prefix
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
        // Never stored until configured, so the derivation is pinned.
        assert_eq!(default_invoice_prefix("proj_1"), settings.invoice_prefix);
        assert_eq!(default_invoice_prefix("proj_1"), "FZHH1SI6");
        assert_ne!(default_invoice_prefix("proj_2"), "FZHH1SI6");
    }

    #[test]
    fn configuring_billing_records_the_whole_settings() {
        let changes = BillingChanges {
            invoice_prefix: Some("ACME".into()),
            default_tax_rate: Some(Some("txr_1".into())),
            seller_name: Some(Some("Acme Ltd".into())),
            seller_address_lines: Some(vec!["1 High St".into(), "London".into()]),
            brand_color: Some(Some("#1A73E8".into())),
            dunning_retry_days: Some(vec![1, 3, 5]),
            acquirer_fee: Some(crate::settlement::FeeRule::parse("1.4%+20").unwrap()),
            ..Default::default()
        };
        let settings = BillingSettings {
            invoice_prefix: "ACME".into(),
            default_tax_rate: Some("txr_1".into()),
            seller: SellerDetails {
                name: Some("Acme Ltd".into()),
                address_lines: vec!["1 High St".into(), "London".into()],
                email: None,
                tax_id: None,
            },
            brand_color: Some("#1a73e8".into()),
            dunning_retry_days: vec![1, 3, 5],
            acquirer_fee: crate::settlement::FeeRule::parse("1.4%+20").unwrap(),
        };
        TestFramework::<Project>::with(())
            .given(vec![created()])
            .when(configure(changes))
            .then_expect_events(vec![ProjectEvent::BillingConfigured {
                settings: settings.clone(),
                at: 5,
            }]);
        // A later change keeps what it does not name.
        let mut project = Project::default();
        project.apply(created());
        project.apply(ProjectEvent::BillingConfigured { settings, at: 5 });
        let next = BillingChanges {
            default_tax_rate: Some(None),
            ..Default::default()
        }
        .applied_to(&project.billing_settings());
        assert_eq!(next.default_tax_rate, None);
        assert_eq!(next.invoice_prefix, "ACME");
        assert_eq!(next.dunning_retry_days, vec![1, 3, 5]);
        assert_eq!(
            next.acquirer_fee.map(|fee| fee.to_string()).as_deref(),
            Some("1.4%+20")
        );
        // Settings recorded before fee rules existed read as no fee.
        let old: BillingSettings = serde_json::from_value(serde_json::json!({
            "invoice_prefix": "ACME", "dunning_retry_days": [1]
        }))
        .unwrap();
        assert_eq!(old.acquirer_fee, None);
    }

    #[test]
    fn billing_settings_are_checked() {
        let refused = [
            (
                BillingChanges {
                    invoice_prefix: Some("ab".into()),
                    ..Default::default()
                },
                ProjectError::BadInvoicePrefix("ab".into()),
            ),
            (
                BillingChanges {
                    invoice_prefix: Some("acme".into()),
                    ..Default::default()
                },
                ProjectError::BadInvoicePrefix("acme".into()),
            ),
            (
                BillingChanges {
                    invoice_prefix: Some("ABCDEFGHIJKLM".into()),
                    ..Default::default()
                },
                ProjectError::BadInvoicePrefix("ABCDEFGHIJKLM".into()),
            ),
            (
                BillingChanges {
                    brand_color: Some(Some("blue".into())),
                    ..Default::default()
                },
                ProjectError::BadBrandColor("blue".into()),
            ),
            (
                BillingChanges {
                    dunning_retry_days: Some(vec![1, 0]),
                    ..Default::default()
                },
                ProjectError::BadDunningSchedule,
            ),
            (
                BillingChanges {
                    dunning_retry_days: Some(vec![1; MAX_DUNNING_RETRIES + 1]),
                    ..Default::default()
                },
                ProjectError::BadDunningSchedule,
            ),
            (
                BillingChanges {
                    default_tax_rate: Some(Some("cus_1".into())),
                    ..Default::default()
                },
                ProjectError::BadDefaultTaxRate("cus_1".into()),
            ),
            (
                BillingChanges {
                    seller_email: Some(Some("nobody".into())),
                    ..Default::default()
                },
                ProjectError::BadSellerEmail("nobody".into()),
            ),
            (
                BillingChanges {
                    seller_address_lines: Some(vec!["x".into(); MAX_SELLER_ADDRESS_LINES + 1]),
                    ..Default::default()
                },
                ProjectError::TooManyAddressLines,
            ),
        ];
        for (changes, error) in refused {
            TestFramework::<Project>::with(())
                .given(vec![created()])
                .when(configure(changes))
                .then_expect_error(error);
        }
        TestFramework::<Project>::with(())
            .given_no_previous_events()
            .when(configure(BillingChanges::default()))
            .then_expect_error(ProjectError::NotFound);
        // No retries at all is a schedule too: straight to past_due.
        let mut project = Project::default();
        project.apply(created());
        let none = BillingChanges {
            dunning_retry_days: Some(vec![]),
            ..Default::default()
        }
        .applied_to(&project.billing_settings());
        assert_eq!(validate_billing(&none), Ok(()));
    }
}
