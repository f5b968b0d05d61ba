//! What the simulated gateway does with a request, independent of HTTP: authenticate it,
//! then run a new transaction, a 3-D Secure continuation or a management action against
//! the ledger, and return the (unsigned) answer.

use crate::card::{last4, luhn_valid, CardBrand};
use crate::codes::{ResponseCode, TransactionState};
use crate::fields::{Fields, CARD_DATA_FIELDS};
use crate::response::parse_amount_minor;
use crate::signature::{self, SIGNATURE_FIELD};
use crate::test_cards::{self, CardBehaviour};

use super::ledger::{
    new_authorisation_code, new_xref, random_token, set_result, CaptureDelay, Challenge, Ledger,
    StoredCard, Transaction, MAX_PENDING_BROWSER_STEPS, MAX_TRANSACTIONS, XREF_LIFETIME_SECONDS,
};
use super::{SimulatedMerchant, SimulatorConfig};

/// The default `duplicateDelay`; 0 also means 300 per the guide (§1.9).
const DEFAULT_DUPLICATE_DELAY_SECONDS: i64 = 300;
const MAX_DUPLICATE_DELAY_SECONDS: i64 = 9999;
const MAX_CAPTURE_DELAY_DAYS: u32 = 30;

/// Fields a repeat on an xref never clones: they describe the earlier request itself.
const NOT_CLONED: [&str; 7] = [
    "action",
    "xref",
    SIGNATURE_FIELD,
    "duplicateDelay",
    "authorisationCode",
    "threeDSRef",
    "transactionUnique",
];

/// Where a request came in: Direct answers 65802 for the merchant to handle; Hosted runs the
/// 3-D Secure challenge itself (§1.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Channel {
    Direct,
    Hosted,
}

pub(crate) struct Context<'a> {
    pub config: &'a SimulatorConfig,
    pub merchant: &'a SimulatedMerchant,
    /// The address browsers reach the simulator on, for `threeDSURL`.
    pub base_url: &'a str,
    pub channel: Channel,
    pub now: i64,
}

/// The answer to a request, and the challenge a hosted payment must show, if any.
pub(crate) struct Answer {
    pub fields: Fields,
    pub challenge_id: Option<String>,
}

impl Answer {
    fn plain(fields: Fields) -> Self {
        Self {
            fields,
            challenge_id: None,
        }
    }
}

/// A refusal before any processing: the request echoed with the code.
pub(crate) fn refusal(request: &Fields, code: ResponseCode, message: &str) -> Fields {
    let mut fields = echo(request);
    set_result(&mut fields, code, message);
    fields
}

/// Every request field except card data and the signature (§0.4).
pub(crate) fn echo(request: &Fields) -> Fields {
    request
        .iter()
        .filter(|(name, _)| !CARD_DATA_FIELDS.contains(name) && *name != SIGNATURE_FIELD)
        .collect()
}

/// Checks `merchantID` and the signature and returns the merchant and the fields the
/// signature covers. `allow_unsigned` is for the 3-D Secure continuation, which "does not
/// need to be signed" (§1.4.2). The error carries the merchant, when known, so that the
/// refusal can still be signed for it.
pub(crate) fn authenticate<'c>(
    config: &'c SimulatorConfig,
    request: &Fields,
    allow_unsigned: bool,
) -> Result<(&'c SimulatedMerchant, Fields), (Option<&'c SimulatedMerchant>, Fields)> {
    let Some(merchant) = request.get("merchantID").and_then(|id| config.merchant(id)) else {
        return Err((
            None,
            refusal(
                request,
                ResponseCode::INVALID_CREDENTIALS,
                "INVALID MERCHANT ID",
            ),
        ));
    };
    let Some(secret) = merchant.secret.as_deref() else {
        return Ok((merchant, echo_with_card(request)));
    };
    if request.get_non_empty(SIGNATURE_FIELD).is_none() {
        if merchant.signature_required && !allow_unsigned {
            return Err((
                Some(merchant),
                refusal(
                    request,
                    ResponseCode::MISSING_SIGNATURE,
                    "MISSING SIGNATURE",
                ),
            ));
        }
        return Ok((merchant, echo_with_card(request)));
    }
    match signature::verify(request, Some(secret)) {
        Ok(verified) => Ok((merchant, verified)),
        // The guide lists a signature mismatch under 65539, invalid credentials (§1.5).
        Err(_) => Err((
            Some(merchant),
            refusal(
                request,
                ResponseCode::INVALID_CREDENTIALS,
                "INVALID CREDENTIALS: SIGNATURE MISMATCH",
            ),
        )),
    }
}

fn echo_with_card(request: &Fields) -> Fields {
    let mut fields = request.clone();
    fields.remove(SIGNATURE_FIELD);
    fields
}

impl Ledger {
    /// A Direct (or hosted-form) request from an authenticated merchant.
    pub(crate) fn process(&mut self, context: &Context<'_>, request: &Fields) -> Answer {
        self.apply_elapsed_time(
            context.config.settle_after_seconds,
            context.config.strict_test_amounts,
            context.now,
        );
        if request.get_non_empty("threeDSRef").is_some() {
            return Answer::plain(self.continue_three_d_secure(context, request));
        }
        match request.get("action").unwrap_or("") {
            "SALE" | "VERIFY" | "PREAUTH" | "REFUND" => self.new_transaction(context, request),
            "REFUND_SALE" => Answer::plain(self.refund_sale(context, request)),
            "CAPTURE" => Answer::plain(self.capture(context, request)),
            "CANCEL" => Answer::plain(self.cancel(context, request)),
            "QUERY" => Answer::plain(self.query(context, request)),
            "" => Answer::plain(refusal(
                request,
                ResponseCode(66311 - 256),
                "MISSING action",
            )),
            _ => Answer::plain(refusal(
                request,
                ResponseCode::INVALID_ACTION,
                "INVALID action",
            )),
        }
    }

    fn new_transaction(&mut self, context: &Context<'_>, request: &Fields) -> Answer {
        let action = request.get("action").unwrap_or("").to_string();
        if self.transactions.len() >= MAX_TRANSACTIONS {
            return Answer::plain(refusal(
                request,
                ResponseCode(65565),
                "SIMULATOR FULL: RESTART IT",
            ));
        }
        let source = match request.get_non_empty("xref") {
            Some(xref) => match self.live_transaction(context, xref) {
                Some(source) => Some(source.clone()),
                None => {
                    return Answer::plain(refusal(
                        request,
                        ResponseCode::INVALID_XREF,
                        "INVALID xref",
                    ))
                }
            },
            None => None,
        };
        // Cloning (§1.6): fields not sent are filled in from the referenced transaction.
        let mut effective = Fields::new();
        if let Some(source) = &source {
            for (name, value) in source.echoed_fields.iter() {
                if !NOT_CLONED.contains(&name) {
                    effective.set(name, value);
                }
            }
        }
        for (name, value) in request.iter() {
            effective.set(name, value);
        }

        let card = match request.get_non_empty("cardNumber") {
            Some(_) => match card_from_request(&effective) {
                Ok(card) => card,
                Err((code, message)) => return Answer::plain(refusal(request, code, message)),
            },
            None => match &source {
                Some(source) => source.card.clone(),
                None => {
                    return Answer::plain(refusal(
                        request,
                        ResponseCode(66314 - 256),
                        "MISSING cardNumber",
                    ))
                }
            },
        };
        let Some(amount_minor) = effective
            .get_non_empty("amount")
            .and_then(|text| parse_amount_minor(text, 2))
        else {
            return Answer::plain(refusal(
                request,
                ResponseCode::INVALID_AMOUNT,
                "INVALID amount",
            ));
        };
        if (action == "VERIFY") != (amount_minor == 0) {
            // VERIFY must be zero; everything else must not be.
            return Answer::plain(refusal(
                request,
                ResponseCode::INVALID_AMOUNT,
                "INVALID amount",
            ));
        }
        let Some(currency_code) = effective.get_non_empty("currencyCode").map(str::to_string)
        else {
            return Answer::plain(refusal(
                request,
                ResponseCode::MALFORMED_REQUEST,
                "MISSING currencyCode",
            ));
        };
        let capture_delay = match parse_capture_delay(effective.get_non_empty("captureDelay")) {
            Some(delay) => delay,
            None => {
                return Answer::plain(refusal(
                    request,
                    ResponseCode::INVALID_CAPTURE_DELAY,
                    "INVALID captureDelay",
                ))
            }
        };
        let type_code = effective.get_non_empty("type").unwrap_or("1").to_string();

        let duplicate_delay_seconds = effective
            .get("duplicateDelay")
            .and_then(|text| text.parse::<i64>().ok())
            .filter(|seconds| *seconds > 0)
            .unwrap_or(DEFAULT_DUPLICATE_DELAY_SECONDS)
            .min(MAX_DUPLICATE_DELAY_SECONDS);
        let amount_text = amount_minor.to_string();
        let card_number_digits: String = request
            .get("cardNumber")
            .unwrap_or("")
            .chars()
            .filter(|character| *character != ' ')
            .collect();
        let duplicate_key = [
            ("merchantID", context.merchant.merchant_id.as_str()),
            ("action", action.as_str()),
            ("type", type_code.as_str()),
            ("amount", amount_text.as_str()),
            (
                "transactionUnique",
                request.get("transactionUnique").unwrap_or(""),
            ),
            ("currencyCode", currency_code.as_str()),
            ("xref", request.get("xref").unwrap_or("")),
            ("cardNumber", card_number_digits.as_str()),
        ];
        if self.is_duplicate(&duplicate_key, duplicate_delay_seconds, context.now) {
            return Answer::plain(refusal(
                request,
                ResponseCode::DUPLICATE_REQUEST,
                "DUPLICATE REQUEST",
            ));
        }

        let customer_initiated = type_code == "1";
        let authenticating_action = matches!(action.as_str(), "SALE" | "VERIFY" | "PREAUTH");
        let three_ds_enabled = customer_initiated
            && authenticating_action
            && effective.get("threeDSRequired") != Some("N");
        let browser_available = context.channel == Channel::Hosted
            || effective.get_non_empty("threeDSRedirectURL").is_some();
        let has_authorisation_code = effective.get_non_empty("authorisationCode").is_some();

        let mut transaction = Transaction {
            xref: new_xref(context.now),
            transaction_id: self.next_transaction_id(),
            merchant_id: context.merchant.merchant_id.clone(),
            action: action.clone(),
            amount_minor,
            amount_received_minor: 0,
            amount_refunded_minor: 0,
            card,
            state: TransactionState::Received,
            response_code: ResponseCode::SUCCESS,
            response_message: String::new(),
            authorisation_code: None,
            transaction_unique: effective
                .get_non_empty("transactionUnique")
                .map(str::to_string),
            capture_delay,
            echoed_fields: echo(&effective),
            result_fields: Fields::new(),
            created_at: context.now,
            modified_at: context.now,
            captured_at: None,
        };
        transaction.echoed_fields.remove("xref");
        transaction.result_fields.set_optional(
            "cv2Check",
            request
                .get_non_empty("cardCVV")
                .map(|cvv| cv2_check(request, cvv)),
        );

        let decision = if card_expired(&transaction.card, context.now) {
            Decision::Decline(ResponseCode::EXPIRED_CARD)
        } else if action == "REFUND" {
            Decision::Approve
        } else if context.config.strict_test_amounts {
            let three_ds = if three_ds_enabled && browser_available {
                three_ds_by_expiry_month(transaction.card.expiry_month)
            } else {
                ThreeDSecureStep::NotRun
            };
            match three_ds {
                ThreeDSecureStep::Challenge => Decision::Challenge,
                ThreeDSecureStep::Failed => Decision::ThreeDSecureFailed,
                ThreeDSecureStep::Authenticated | ThreeDSecureStep::NotRun => {
                    let authenticated = three_ds == ThreeDSecureStep::Authenticated;
                    if authenticated {
                        set_three_ds_result(&mut transaction.result_fields, true);
                    }
                    if action == "VERIFY" {
                        Decision::Approve
                    } else {
                        let sca_eligible =
                            three_ds_enabled && !authenticated && action != "PREAUTH";
                        strict_amount_decision(amount_minor, has_authorisation_code, sca_eligible)
                    }
                }
            }
        } else {
            let behaviour = transaction.card.behaviour;
            match behaviour {
                CardBehaviour::RequireThreeDSecure if three_ds_enabled && browser_available => {
                    Decision::Challenge
                }
                CardBehaviour::RequireThreeDSecure if action == "VERIFY" => Decision::Approve,
                CardBehaviour::RequireThreeDSecure => Decision::Decline(ResponseCode::SCA_REQUIRED),
                _ => {
                    if three_ds_enabled && browser_available {
                        // Every other card authenticates frictionlessly.
                        set_three_ds_result(&mut transaction.result_fields, true);
                    }
                    card_decision(behaviour, &action, has_authorisation_code)
                }
            }
        };

        let mut challenge_id = None;
        if decision == Decision::Challenge {
            if self.challenges.len() >= MAX_PENDING_BROWSER_STEPS {
                return Answer::plain(refusal(
                    request,
                    ResponseCode(65565),
                    "TOO MANY PENDING CHALLENGES",
                ));
            }
            let challenge = Challenge {
                id: random_token(),
                three_ds_ref: random_token(),
                xref: transaction.xref.clone(),
                passed: None,
                redirect_url: effective
                    .get_non_empty("threeDSRedirectURL")
                    .map(str::to_string),
                hosted: context.channel == Channel::Hosted,
            };
            transaction.response_code = ResponseCode::THREE_DS_AUTHENTICATION_REQUIRED;
            transaction.response_message = "3DS AUTHENTICATION REQUIRED".to_string();
            transaction.state = TransactionState::Received;
            transaction.result_fields.set("threeDSEnabled", "Y");
            transaction
                .result_fields
                .set("threeDSRef", challenge.three_ds_ref.clone());
            transaction
                .result_fields
                .set("threeDSURL", format!("{}/acs/challenge", context.base_url));
            transaction
                .result_fields
                .set("threeDSRequest[creq]", challenge.id.clone());
            challenge_id = Some(challenge.id.clone());
            self.challenges.insert(challenge.id.clone(), challenge);
        } else {
            apply_decision(&mut transaction, decision, context.now);
        }
        let fields = transaction.view();
        self.insert_transaction(transaction);
        Answer {
            fields,
            challenge_id,
        }
    }

    /// The 3-D Secure continuation: `threeDSRef` plus `threeDSResponse[...]` (§1.7 step 4).
    fn continue_three_d_secure(&mut self, context: &Context<'_>, request: &Fields) -> Fields {
        let three_ds_ref = request.get("threeDSRef").unwrap_or("");
        let Some(challenge) = self
            .challenges
            .values()
            .find(|challenge| challenge.three_ds_ref == three_ds_ref)
            .cloned()
        else {
            return refusal(
                request,
                ResponseCode::REQUEST_EXPIRED,
                "UNKNOWN OR USED threeDSRef",
            );
        };
        let Some(transaction) = self.transactions.get(&challenge.xref) else {
            return refusal(
                request,
                ResponseCode::REQUEST_EXPIRED,
                "UNKNOWN OR USED threeDSRef",
            );
        };
        if transaction.merchant_id != context.merchant.merchant_id {
            return refusal(
                request,
                ResponseCode::REQUEST_EXPIRED,
                "UNKNOWN OR USED threeDSRef",
            );
        }
        let amount_changed = request
            .get_non_empty("amount")
            .is_some_and(|text| parse_amount_minor(text, 2) != Some(transaction.amount_minor));
        let card_sent = request.get_non_empty("cardNumber").is_some();
        let cres = request.get("threeDSResponse[cres]");
        if amount_changed || card_sent || cres.is_some_and(|cres| cres != challenge.id) {
            return refusal(request, ResponseCode::REQUEST_MISMATCH, "REQUEST MISMATCH");
        }
        let mut fields = match (cres, challenge.passed) {
            (Some(_), Some(passed)) => {
                self.challenges.remove(&challenge.id);
                self.complete_challenge(context, &challenge.xref, passed)
            }
            // Not finished in the browser yet: the same challenge is still the next step.
            _ => transaction.view(),
        };
        for (name, value) in echo(request).iter() {
            if !fields.contains(name) {
                fields.set(name, value);
            }
        }
        fields
    }

    /// Finishes a challenged transaction with the tester's choice; returns its view.
    pub(crate) fn complete_challenge(
        &mut self,
        context: &Context<'_>,
        xref: &str,
        passed: bool,
    ) -> Fields {
        let strict = context.config.strict_test_amounts;
        let Some(transaction) = self.transaction_mut(xref) else {
            return Fields::new();
        };
        for name in ["threeDSRef", "threeDSURL", "threeDSRequest[creq]"] {
            transaction.result_fields.remove(name);
        }
        set_three_ds_result(&mut transaction.result_fields, passed);
        let decision = if !passed {
            Decision::ThreeDSecureFailed
        } else if transaction.action == "VERIFY" {
            Decision::Approve
        } else if strict {
            let has_authorisation_code = transaction
                .echoed_fields
                .get_non_empty("authorisationCode")
                .is_some();
            strict_amount_decision(transaction.amount_minor, has_authorisation_code, false)
        } else {
            Decision::Approve
        };
        apply_decision(transaction, decision, context.now);
        transaction.view()
    }

    fn capture(&mut self, context: &Context<'_>, request: &Fields) -> Fields {
        let transaction = match self.managed_transaction(context, request) {
            Ok(transaction) => transaction,
            Err(refused) => return refused,
        };
        // WooCommerce re-captures a captured, unsettled sale for less as a partial refund
        // (§0.2), so both held and captured sales may be captured.
        if transaction.action != "SALE"
            || !matches!(
                transaction.state,
                TransactionState::Approved | TransactionState::Captured
            )
        {
            return management_refusal(
                transaction,
                request,
                ResponseCode::ACTION_NOT_ALLOWED,
                "CAPTURE NOT ALLOWED",
            );
        }
        let amount = match request.get_non_empty("amount") {
            Some(text) => parse_amount_minor(text, 2),
            None => Some(transaction.amount_received_minor),
        };
        let Some(amount) =
            amount.filter(|amount| *amount > 0 && *amount <= transaction.amount_received_minor)
        else {
            return management_refusal(
                transaction,
                request,
                ResponseCode::INVALID_AMOUNT,
                "INVALID amount",
            );
        };
        transaction.amount_received_minor = amount;
        if transaction.state == TransactionState::Approved {
            transaction.captured_at = Some(context.now);
        }
        transaction.state = TransactionState::Captured;
        transaction.modified_at = context.now;
        management_answer(transaction, "CAPTURE")
    }

    fn cancel(&mut self, context: &Context<'_>, request: &Fields) -> Fields {
        let transaction = match self.managed_transaction(context, request) {
            Ok(transaction) => transaction,
            Err(refused) => return refused,
        };
        if !matches!(
            transaction.state,
            TransactionState::Approved | TransactionState::Captured | TransactionState::Received
        ) {
            return management_refusal(
                transaction,
                request,
                ResponseCode::ACTION_NOT_ALLOWED,
                "CANCEL NOT ALLOWED",
            );
        }
        transaction.state = TransactionState::Canceled;
        transaction.modified_at = context.now;
        management_answer(transaction, "CANCEL")
    }

    fn query(&mut self, context: &Context<'_>, request: &Fields) -> Fields {
        let merchant_id = context.merchant.merchant_id.as_str();
        let found = match (
            request.get_non_empty("xref"),
            request.get_non_empty("transactionUnique"),
        ) {
            (Some(xref), _) => self
                .transactions
                .get(xref)
                .filter(|found| found.merchant_id == merchant_id),
            (None, Some(unique)) => self.find_by_transaction_unique(merchant_id, unique),
            (None, None) => return refusal(request, ResponseCode::MISSING_XREF, "MISSING xref"),
        };
        let Some(transaction) = found else {
            return refusal(request, ResponseCode::INVALID_XREF, "NO SUCH TRANSACTION");
        };
        let mut fields = transaction.view();
        fields.set("action", format!("QUERY:{}", transaction.action));
        fields
    }

    fn refund_sale(&mut self, context: &Context<'_>, request: &Fields) -> Fields {
        let original = match self.managed_transaction(context, request) {
            Ok(original) => original,
            Err(refused) => return refused,
        };
        // Before settlement a refund is a CANCEL or a smaller CAPTURE, not a REFUND_SALE (§0.2).
        if original.action != "SALE" || original.state != TransactionState::Accepted {
            return refusal(
                request,
                ResponseCode::ACTION_NOT_ALLOWED,
                &format!(
                    "REFUND_SALE NOT ALLOWED: ORIGINAL IS {}",
                    original.state.as_str().to_uppercase()
                ),
            );
        }
        if CARD_DATA_FIELDS
            .iter()
            .any(|name| request.get_non_empty(name).is_some())
        {
            return refusal(
                request,
                ResponseCode::REQUEST_MISMATCH,
                "REQUEST MISMATCH: CARD DETAILS CHANGED",
            );
        }
        let remaining = original.amount_received_minor - original.amount_refunded_minor;
        let amount = match request.get_non_empty("amount") {
            Some(text) => parse_amount_minor(text, 2),
            None => Some(remaining),
        };
        let Some(amount) = amount.filter(|amount| *amount > 0 && *amount <= remaining) else {
            return refusal(
                request,
                ResponseCode::INVALID_AMOUNT,
                "INVALID amount: MORE THAN REMAINS",
            );
        };
        let original_xref = original.xref.clone();
        let card = original.card.clone();
        let mut echoed_fields = Fields::new();
        for (name, value) in original.echoed_fields.iter() {
            if !NOT_CLONED.contains(&name) && name != "captureDelay" {
                echoed_fields.set(name, value);
            }
        }
        for (name, value) in echo(request).iter() {
            echoed_fields.set(name, value);
        }
        echoed_fields.remove("xref");
        let amount_text = amount.to_string();
        let duplicate_key = [
            ("merchantID", context.merchant.merchant_id.as_str()),
            ("action", "REFUND_SALE"),
            ("amount", amount_text.as_str()),
            (
                "transactionUnique",
                request.get("transactionUnique").unwrap_or(""),
            ),
            ("xref", original_xref.as_str()),
        ];
        if self.is_duplicate(&duplicate_key, DEFAULT_DUPLICATE_DELAY_SECONDS, context.now) {
            return refusal(
                request,
                ResponseCode::DUPLICATE_REQUEST,
                "DUPLICATE REQUEST",
            );
        }
        let refunded_total = match self.transaction_mut(&original_xref) {
            Some(original) => {
                original.amount_refunded_minor += amount;
                original.modified_at = context.now;
                original.amount_refunded_minor
            }
            None => amount,
        };
        let mut refund = Transaction {
            xref: new_xref(context.now),
            transaction_id: self.next_transaction_id(),
            merchant_id: context.merchant.merchant_id.clone(),
            action: "REFUND_SALE".to_string(),
            amount_minor: amount,
            amount_received_minor: amount,
            amount_refunded_minor: refunded_total,
            card,
            state: TransactionState::Captured,
            response_code: ResponseCode::SUCCESS,
            response_message: "REFUND ACCEPTED".to_string(),
            authorisation_code: Some(new_authorisation_code()),
            transaction_unique: request
                .get_non_empty("transactionUnique")
                .map(str::to_string),
            capture_delay: CaptureDelay::Immediate,
            echoed_fields,
            result_fields: Fields::new(),
            created_at: context.now,
            modified_at: context.now,
            captured_at: Some(context.now),
        };
        refund.echoed_fields.set("originalXref", original_xref);
        let fields = refund.view();
        self.insert_transaction(refund);
        fields
    }

    /// The transaction a management request names, if it is this merchant's and still alive.
    fn managed_transaction(
        &mut self,
        context: &Context<'_>,
        request: &Fields,
    ) -> Result<&mut Transaction, Fields> {
        let Some(xref) = request.get_non_empty("xref") else {
            return Err(refusal(request, ResponseCode::MISSING_XREF, "MISSING xref"));
        };
        if self.live_transaction(context, xref).is_none() {
            return Err(refusal(request, ResponseCode::INVALID_XREF, "INVALID xref"));
        }
        self.transaction_mut(xref)
            .ok_or_else(|| refusal(request, ResponseCode::INVALID_XREF, "INVALID xref"))
    }

    fn live_transaction(&self, context: &Context<'_>, xref: &str) -> Option<&Transaction> {
        self.transactions.get(xref).filter(|transaction| {
            transaction.merchant_id == context.merchant.merchant_id
                && context.now - transaction.created_at <= XREF_LIFETIME_SECONDS
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Approve,
    Decline(ResponseCode),
    Challenge,
    ThreeDSecureFailed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ThreeDSecureStep {
    NotRun,
    Authenticated,
    Failed,
    Challenge,
}

fn apply_decision(transaction: &mut Transaction, decision: Decision, now: i64) {
    transaction.modified_at = now;
    match decision {
        Decision::Approve => {
            let authorisation_code = new_authorisation_code();
            transaction.response_code = ResponseCode::SUCCESS;
            transaction.response_message = format!("AUTHCODE:{authorisation_code}");
            transaction.authorisation_code = Some(authorisation_code);
            transaction.amount_received_minor = transaction.amount_minor;
            transaction.state = match (transaction.action.as_str(), transaction.capture_delay) {
                ("VERIFY", _) => TransactionState::Verified,
                // PREAUTH authorises and immediately voids (§0.1).
                ("PREAUTH", _) => TransactionState::Reversed,
                (_, CaptureDelay::Immediate) => TransactionState::Captured,
                (_, CaptureDelay::Days(_) | CaptureDelay::Never) => TransactionState::Approved,
            };
            if transaction.state == TransactionState::Captured {
                transaction.captured_at = Some(now);
            }
        }
        Decision::Decline(code) => {
            transaction.response_code = code;
            transaction.response_message = decline_message(code).to_string();
            transaction.state = if matches!(code.0, 1 | 2) {
                TransactionState::Referred
            } else {
                TransactionState::Declined
            };
        }
        Decision::ThreeDSecureFailed => {
            transaction.response_code = ResponseCode::THREE_DS_RESULT_NOT_ACCEPTED;
            transaction.response_message = "3DS AUTHENTICATION FAILED".to_string();
            transaction.state = TransactionState::Declined;
        }
        Decision::Challenge => {}
    }
}

fn decline_message(code: ResponseCode) -> &'static str {
    match code.0 {
        1 | 2 => "CARD REFERRED",
        4 => "CARD DECLINED - KEEP CARD",
        41 => "LOST CARD",
        43 => "STOLEN CARD",
        51 => "INSUFFICIENT FUNDS",
        54 => "EXPIRED CARD",
        65 => "CARD DECLINED - SCA REQUIRED",
        96 => "SYSTEM MALFUNCTION",
        935 => "CVV2 FAILURE",
        _ => "CARD DECLINED",
    }
}

/// The default mode: the card decides (see `test_cards`).
fn card_decision(behaviour: CardBehaviour, action: &str, has_authorisation_code: bool) -> Decision {
    match behaviour {
        CardBehaviour::Approve => Decision::Approve,
        CardBehaviour::Decline(code) => Decision::Decline(code),
        CardBehaviour::DeclineCharges(_) if action == "VERIFY" => Decision::Approve,
        CardBehaviour::DeclineCharges(code) => Decision::Decline(code),
        CardBehaviour::Refer if has_authorisation_code => Decision::Approve,
        CardBehaviour::Refer => Decision::Decline(ResponseCode::CARD_REFERRED),
        CardBehaviour::RequireThreeDSecure => Decision::Decline(ResponseCode::SCA_REQUIRED),
    }
}

/// Strict mode: Cardstream's test-amount ranges (§1.10).
fn strict_amount_decision(
    amount_minor: u64,
    has_authorisation_code: bool,
    sca_eligible: bool,
) -> Decision {
    match amount_minor {
        100..=4999 => Decision::Approve,
        5000..=9999 if has_authorisation_code => Decision::Approve,
        5000..=9999 => Decision::Decline(ResponseCode::CARD_REFERRED),
        10000..=14999 => Decision::Decline(ResponseCode::DO_NOT_HONOUR),
        15000..=19999 => Decision::Decline(ResponseCode::KEEP_CARD),
        20000..=29999 if sca_eligible => Decision::Decline(ResponseCode::SCA_REQUIRED),
        20000..=24999 => Decision::Approve,
        25000..=29999 => Decision::Decline(ResponseCode::DO_NOT_HONOUR),
        _ => Decision::Decline(ResponseCode::INVALID_TEST_AMOUNT),
    }
}

/// Strict mode's 3-D Secure, as the test directory server decides by expiry month (§1.10):
/// 12 challenges, 02 (N) and 06 (R) fail, everything else authenticates.
fn three_ds_by_expiry_month(expiry_month: u8) -> ThreeDSecureStep {
    match expiry_month {
        12 => ThreeDSecureStep::Challenge,
        2 | 6 => ThreeDSecureStep::Failed,
        _ => ThreeDSecureStep::Authenticated,
    }
}

fn set_three_ds_result(result_fields: &mut Fields, authenticated: bool) {
    result_fields.set("threeDSEnabled", "Y");
    result_fields.set("threeDSEnrolled", "Y");
    result_fields.set(
        "threeDSAuthenticated",
        if authenticated { "Y" } else { "N" },
    );
    result_fields.set("threeDSECI", if authenticated { "05" } else { "07" });
    if authenticated {
        result_fields.set("threeDSCAVV", random_token());
    }
    result_fields.set("threeDSDetails[version]", "2.2.0");
    result_fields.set("threeDSResponseCode", if authenticated { "0" } else { "5" });
    result_fields.set(
        "threeDSResponseMessage",
        if authenticated {
            "Success"
        } else {
            "Cardholder Info: authentication failed"
        },
    );
}

fn parse_capture_delay(text: Option<&str>) -> Option<CaptureDelay> {
    match text {
        None | Some("0") => Some(CaptureDelay::Immediate),
        Some("-1") | Some("never") => Some(CaptureDelay::Never),
        Some(days) => days
            .parse::<u32>()
            .ok()
            .filter(|days| *days <= MAX_CAPTURE_DELAY_DAYS)
            .map(CaptureDelay::Days),
    }
}

/// Reads and validates the card fields; keeps only what `StoredCard` allows.
fn card_from_request(fields: &Fields) -> Result<StoredCard, (ResponseCode, &'static str)> {
    let number: String = fields
        .get("cardNumber")
        .unwrap_or("")
        .chars()
        .filter(|character| *character != ' ')
        .collect();
    if !(12..=19).contains(&number.len()) || !luhn_valid(&number) {
        return Err((ResponseCode::INVALID_CARD_NUMBER, "INVALID cardNumber"));
    }
    let (month_text, year_text) = match fields.get_non_empty("cardExpiryDate") {
        Some(date) if date.len() == 4 => (date[..2].to_string(), date[2..].to_string()),
        Some(_) => {
            return Err((
                ResponseCode::INVALID_CARD_EXPIRY_MONTH,
                "INVALID cardExpiryDate",
            ))
        }
        None => (
            fields.get("cardExpiryMonth").unwrap_or("").to_string(),
            fields.get("cardExpiryYear").unwrap_or("").to_string(),
        ),
    };
    let expiry_month = month_text
        .parse::<u8>()
        .ok()
        .filter(|month| (1..=12).contains(month))
        .ok_or((
            ResponseCode::INVALID_CARD_EXPIRY_MONTH,
            "INVALID cardExpiryMonth",
        ))?;
    let expiry_year_two_digits = year_text
        .parse::<u16>()
        .ok()
        .and_then(|year| match year {
            0..=99 => u8::try_from(year).ok(),
            2000..=2099 => u8::try_from(year - 2000).ok(),
            _ => None,
        })
        .ok_or((
            ResponseCode::INVALID_CARD_EXPIRY_YEAR,
            "INVALID cardExpiryYear",
        ))?;
    if let Some(cvv) = fields.get_non_empty("cardCVV") {
        if !(3..=4).contains(&cvv.len()) || !cvv.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err((ResponseCode::INVALID_CARD_CVV, "INVALID cardCVV"));
        }
    }
    let test_card = test_cards::by_number(&number);
    Ok(StoredCard {
        last4: last4(&number).to_string(),
        brand: CardBrand::detect(&number),
        debit: test_card.is_some_and(|card| card.debit),
        behaviour: test_cards::behaviour_of(&number),
        expiry_month,
        expiry_year_two_digits,
    })
}

/// CV2 is reported, not enforced: like Stripe's test cards, any CVV is accepted, but a
/// published test card's own CVV reads as "matched".
fn cv2_check(request: &Fields, cvv: &str) -> &'static str {
    match request.get("cardNumber").and_then(test_cards::by_number) {
        Some(card) if card.cvv == cvv => "matched",
        Some(_) => "not matched",
        None => "not checked",
    }
}

fn card_expired(card: &StoredCard, now: i64) -> bool {
    let Some(today) = chrono::DateTime::from_timestamp(now, 0) else {
        return false;
    };
    use chrono::Datelike;
    let current_year = i64::from(today.year()) % 100;
    let current_month = i64::from(today.month());
    let year = i64::from(card.expiry_year_two_digits);
    let month = i64::from(card.expiry_month);
    (year, month) < (current_year, current_month)
}

fn management_answer(transaction: &Transaction, action: &str) -> Fields {
    let mut fields = transaction.view();
    fields.set("action", format!("{action}:{}", transaction.action));
    set_result(&mut fields, ResponseCode::SUCCESS, "SUCCESS");
    fields
}

fn management_refusal(
    transaction: &Transaction,
    request: &Fields,
    code: ResponseCode,
    message: &str,
) -> Fields {
    let mut fields = transaction.view();
    for (name, value) in echo(request).iter() {
        if name != "action" {
            fields.set(name, value);
        }
    }
    let requested = request.get("action").unwrap_or("");
    fields.set("action", format!("{requested}:{}", transaction.action));
    let message = format!(
        "{message}: TRANSACTION IS {}",
        transaction.state.as_str().to_uppercase()
    );
    set_result(&mut fields, code, &message);
    fields
}
