//! Update fields that may clear a value: `Option<Option<T>>`, where `None` leaves the field
//! alone and `Some(None)` clears it (Stripe's "empty string unsets").
//!
//! Serialised, a clear is `"field": null` and an untouched field is absent. Serde alone
//! reads `null` back as the outer `None`, which would turn every stored "clear" into "leave
//! alone" when the event is loaded again; such fields therefore carry
//! `#[serde(default, deserialize_with = "crate::clearable::deserialize")]`.

use serde::{Deserialize, Deserializer};

/// A present field (`null` included) as `Some`; an absent one falls back to the default.
pub fn deserialize<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Change {
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "super::deserialize"
        )]
        name: Option<Option<String>>,
    }

    #[test]
    fn a_clear_survives_a_round_trip_through_json() {
        for change in [
            Change { name: None },
            Change { name: Some(None) },
            Change {
                name: Some(Some("Ada".into())),
            },
        ] {
            let json = serde_json::to_string(&change).unwrap();
            let back: Change = serde_json::from_str(&json).unwrap();
            assert_eq!(back, change, "{json}");
        }
    }
}
