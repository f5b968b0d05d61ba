//! The billing catalog's Stripe shapes: `product`, `price`, `tax_rate` (API version
//! 2026-10-28.endive; the field sets of the endive SDK's typed models).

use domain::price::Price;
use domain::product::Product;
use domain::tax_rate::TaxRate;
use serde_json::{json, Value};

/// A product. A deleted one is Stripe's stub `{id, object, deleted: true}`.
pub fn product(product: &Product, livemode: bool) -> Value {
    if product.deleted {
        return json!({"id": product.id, "object": "product", "deleted": true});
    }
    json!({
        "id": product.id,
        "object": "product",
        "active": product.active,
        "created": product.created,
        "default_price": product.default_price,
        "description": product.description,
        "images": [],
        "livemode": livemode,
        "marketing_features": [],
        "metadata": product.metadata,
        "name": product.name,
        "package_dimensions": null,
        "shippable": null,
        "statement_descriptor": null,
        "tax_code": null,
        "tax_details": null,
        "type": "service",
        "unit_label": product.unit_label,
        "updated": product.updated,
        "url": null,
    })
}

/// A price: always `per_unit` with a whole `unit_amount` (`unit_amount_decimal` is its
/// string form), `licensed` when recurring. `currency_options` and `tiers` are includable
/// fields at Stripe, absent unless asked for; we have neither.
pub fn price(price: &Price, livemode: bool) -> Value {
    let recurring = price.recurring.map(|recurring| {
        json!({
            "interval": recurring.interval.as_str(),
            "interval_count": recurring.interval_count,
            "meter": null,
            "trial_period_days": null,
            "usage_type": "licensed",
        })
    });
    json!({
        "id": price.id,
        "object": "price",
        "active": price.active,
        "billing_scheme": "per_unit",
        "created": price.created,
        "currency": price.currency,
        "custom_unit_amount": null,
        "livemode": livemode,
        "lookup_key": price.lookup_key,
        "metadata": price.metadata,
        "nickname": price.nickname,
        "product": price.product,
        "recurring": recurring,
        "tax_behavior": price.tax_behavior.as_str(),
        "tiers_mode": null,
        "transform_quantity": null,
        "type": price.price_type().as_str(),
        "unit_amount": price.unit_amount,
        "unit_amount_decimal": price.unit_amount.to_string(),
    })
}

/// A tax rate. `percentage` (and `effective_percentage`, the same for a percentage rate)
/// is a JSON number, as Stripe sends it; the exact decimal stays in the log.
pub fn tax_rate(rate: &TaxRate, livemode: bool) -> Value {
    let percentage = rate
        .percentage
        .to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number);
    json!({
        "id": rate.id,
        "object": "tax_rate",
        "active": rate.active,
        "country": rate.country,
        "created": rate.created,
        "description": rate.description,
        "display_name": rate.display_name,
        "effective_percentage": percentage,
        "flat_amount": null,
        "inclusive": rate.inclusive,
        "jurisdiction": rate.jurisdiction,
        "jurisdiction_level": null,
        "livemode": livemode,
        "metadata": rate.metadata,
        "percentage": percentage,
        "rate_type": "percentage",
        "state": rate.state,
        "tax_type": rate.tax_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::customer::Metadata;
    use domain::price::{Interval, Recurring, TaxBehavior};
    use domain::Currency;

    fn keys(value: &Value) -> Vec<&str> {
        value
            .as_object()
            .map(|object| object.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_recurring_price_has_stripes_shape() {
        let price = Price {
            id: "price_1".into(),
            product: "prod_1".into(),
            currency: Currency::GBP,
            unit_amount: 1_500,
            recurring: Some(Recurring {
                interval: Interval::Month,
                interval_count: 3,
            }),
            tax_behavior: TaxBehavior::Exclusive,
            nickname: None,
            lookup_key: Some("gold".into()),
            active: true,
            metadata: Metadata::new(),
            created: 100,
        };
        let body = super::price(&price, false);
        assert_eq!(body["type"], "recurring");
        assert_eq!(body["unit_amount_decimal"], "1500");
        assert_eq!(body["currency"], "gbp");
        assert_eq!(
            body["recurring"],
            json!({"interval": "month", "interval_count": 3, "meter": null,
                   "trial_period_days": null, "usage_type": "licensed"})
        );
        assert!(!keys(&body).contains(&"tiers") && !keys(&body).contains(&"currency_options"));
        let one_time = super::price(
            &Price {
                recurring: None,
                ..price
            },
            false,
        );
        assert_eq!(
            (&one_time["type"], &one_time["recurring"]),
            (&json!("one_time"), &Value::Null)
        );
    }

    #[test]
    fn a_tax_rate_percentage_is_a_number() {
        let rate = TaxRate {
            id: "txr_1".into(),
            display_name: "VAT".into(),
            percentage: domain::tax_rate::parse_percentage("17.5").unwrap(),
            inclusive: true,
            active: true,
            ..TaxRate::default()
        };
        let body = super::tax_rate(&rate, true);
        assert_eq!(body["percentage"], json!(17.5));
        assert_eq!(body["effective_percentage"], json!(17.5));
        assert_eq!(body["object"], "tax_rate");
        assert_eq!(body["livemode"], true);
    }

    #[test]
    fn a_deleted_product_is_a_stub() {
        let product = Product {
            id: "prod_1".into(),
            name: "Gold".into(),
            deleted: true,
            ..Product::default()
        };
        assert_eq!(
            super::product(&product, false),
            json!({"id": "prod_1", "object": "product", "deleted": true})
        );
    }
}
