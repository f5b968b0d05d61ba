//! A Checkout Session's hosted page driven as a browser without script would drive it:
//! our page's signed form to the Cardstream simulator's hosted card form, the card typed
//! in, and the signed result the simulator sends back (for the return to be posted, or
//! tampered with, by the test).

use serde_json::Value;

/// A client that, like a test wants, does not follow redirects.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The `action` of the page's form with `form_id` (or its only form) and its hidden fields.
pub fn form_of(html: &str, form_id: Option<&str>) -> (String, Vec<(String, String)>) {
    let start = match form_id {
        Some(id) => html
            .find(&format!("id=\"{id}\""))
            .and_then(|at| html[..at].rfind("<form"))
            .expect("the form"),
        None => html.find("<form").expect("a form"),
    };
    let form = &html[start..start + html[start..].find("</form>").expect("form end")];
    let attribute = |tag: &str, name: &str| -> Option<String> {
        let marker = format!(" {name}=\"");
        let at = tag.find(&marker)? + marker.len();
        let end = tag[at..].find('"')?;
        Some(unescape(&tag[at..at + end]))
    };
    let action = attribute(&form[..form.find('>').expect("tag end")], "action").expect("action");
    let mut fields = Vec::new();
    for piece in form.split("<input").skip(1) {
        let tag = &piece[..piece.find('>').unwrap_or(piece.len())];
        if attribute(tag, "type").as_deref() != Some("hidden") {
            continue;
        }
        if let (Some(name), Some(value)) = (attribute(tag, "name"), attribute(tag, "value")) {
            fields.push((name, value));
        }
    }
    (action, fields)
}

/// Pays `session`'s hosted page with `card` as a browser would, up to the signed result
/// the simulator posts back: returns where it goes and its fields.
pub async fn hosted_result(
    browser: &reqwest::Client,
    session: &Value,
    card: &str,
    cvv: &str,
) -> (String, Vec<(String, String)>) {
    let url = session["url"].as_str().expect("session url");
    let page = browser.get(url).send().await.expect("checkout page");
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("frame-ancestors 'none'") && !policy.contains("unsafe-inline"));
    assert_eq!(headers["cache-control"], "no-store");
    assert!(headers.contains_key("referrer-policy"));
    let html = page.text().await.unwrap();
    let (gateway_url, fields) = form_of(&html, Some("pay"));
    let card_page = browser
        .post(&gateway_url)
        .form(&fields)
        .send()
        .await
        .expect("hosted page");
    assert_eq!(card_page.status(), 200);
    let card_html = card_page.text().await.unwrap();
    assert!(
        card_html.contains("name=\"cardNumber\""),
        "a real card form"
    );
    let (_, hosted) = form_of(&card_html, None);
    let pay_url = gateway_url.replace("/hosted/", "/hosted/pay");
    let mut form = hosted;
    form.extend([
        ("cardNumber".to_string(), card.to_string()),
        ("cardExpiryMonth".to_string(), "12".to_string()),
        ("cardExpiryYear".to_string(), "34".to_string()),
        ("cardCVV".to_string(), cvv.to_string()),
    ]);
    let result = browser
        .post(&pay_url)
        .form(&form)
        .send()
        .await
        .expect("pay");
    let result_html = result.text().await.unwrap();
    form_of(&result_html, Some("autosubmit"))
}

/// Posts the gateway's result to our return URL, as the simulator's page makes the browser do.
pub async fn post_return(
    browser: &reqwest::Client,
    url: &str,
    fields: &[(String, String)],
) -> reqwest::Response {
    browser.post(url).form(fields).send().await.expect("return")
}
