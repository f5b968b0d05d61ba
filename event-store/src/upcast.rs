//! Loading events stored in an older shape: each upcaster turns one (type, version) into the
//! next shape, and they are applied in order until the event is current. The upcasters
//! themselves belong to the domain (they know the shapes); this module only applies them.

use cqrs_es::persist::{EventUpcaster, SerializedEvent};

use crate::record::RecordedEvent;

pub type Upcasters = [Box<dyn EventUpcaster>];

/// The stored event as cqrs-es sees it, brought up to the current shape.
pub fn to_current_shape(
    event: &RecordedEvent,
    upcasters: &Upcasters,
) -> Result<SerializedEvent, serde_json::Error> {
    let mut serialized = SerializedEvent::new(
        event.aggregate_id.clone(),
        usize::try_from(event.sequence).unwrap_or(0),
        event.aggregate_type.clone(),
        event.event_type.clone(),
        event.event_version.clone(),
        serde_json::from_str(&event.payload)?,
        serde_json::from_str(&event.metadata)?,
    );
    for upcaster in upcasters {
        if upcaster.can_upcast(&serialized.event_type, &serialized.event_version) {
            serialized = upcaster.upcast(serialized);
        }
    }
    Ok(serialized)
}
