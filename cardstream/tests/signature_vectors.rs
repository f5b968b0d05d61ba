//! The published signature test vectors (CARDSTREAM.md §1.4.3) reproduce exactly.

use cardstream::signature::{sign, sign_partial, signing_text, verify, SIGNATURE_FIELD};
use cardstream::{Fields, SignatureError};

fn fields(pairs: &[(&str, &str)]) -> Fields {
    pairs.iter().copied().collect()
}

#[test]
fn guide_example_reproduces_string_and_hash() {
    let request = fields(&[
        ("merchantID", "100001"),
        ("action", "SALE"),
        ("type", "1"),
        ("currencyCode", "826"),
        ("countryCode", "826"),
        ("amount", "2691"),
        ("transactionUnique", "55f025addd3c2"),
        ("orderRef", "Signature Test"),
        ("cardNumber", "4929 4212 3460 0821"),
        ("cardExpiryDate", "1213"),
    ]);
    assert_eq!(
        format!("{}DontTellAnyone", signing_text(&request)),
        "action=SALE&amount=2691&cardExpiryDate=1213&cardNumber=4929+4212+3460+0821&countryCode=826&currencyCode=826&merchantID=100001&orderRef=Signature+Test&transactionUnique=55f025addd3c2&type=1DontTellAnyone"
    );
    assert_eq!(
        sign(&request, "DontTellAnyone"),
        "da0acd2c404945365d0e7ae74ad32d57c561e9b942f6bdb7e3dda49a08fcddf74fe6af6b23b8481b8dc8895c12fc21c72c69d60f137fdf574720363e33d94097"
    );
}

#[test]
fn sdk_unit_test_vectors_reproduce() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("a", "one"), ("b", "two")], "86cdc"),
        (&[("a", "one"), ("b", "New lines! %0D %0D%0A")], "cf50d"),
        (&[("a", "one"), ("b", "strange \"'?& symbols ")], "7c952"),
        (&[("a", "one"), ("b", "a £ sign")], "13637"),
        (&[("a", "one"), ("b", "aa ** stars")], "47a2b1"),
        (&[("a", "one"), ("b", "newline \n characater")], "19582"),
        (
            &[("key", "Various new line characters \r\n \r \n \n\r")],
            "666ec",
        ),
    ];
    for (pairs, expected_prefix) in cases {
        let signature = sign(&fields(pairs), "pass");
        assert!(
            signature.starts_with(expected_prefix),
            "{pairs:?} signed {signature}, expected {expected_prefix}…"
        );
        assert_eq!(signature.len(), 128);
    }
}

#[test]
fn nested_fields_sort_by_root_only() {
    let request = fields(&[
        ("a[aa]", "12"),
        ("a[bb]", "13"),
        ("a1", "0"),
        ("aa", "1"),
        ("aZ", "2"),
    ]);
    let signature = sign(&request, "pass");
    assert!(signature.starts_with("4aeaa"), "{signature}");
    assert!(!signature.starts_with("9df005"), "a flat sort was used");
}

#[test]
fn three_ds_continuation_vector_keeps_sub_field_order() {
    let in_order = fields(&[
        ("merchantID", "100856"),
        ("threeDSRef", "AAAAAAAAA"),
        ("threeDSResponse[MD]", "MMMMMMMMM"),
        ("threeDSResponse[PaRes]", "PPPPPPPPP"),
        ("threeDSResponse[submit]", "Submit"),
    ]);
    assert!(sign(&in_order, "Threeds2Test60System").starts_with("b7700a"));
    let swapped = fields(&[
        ("merchantID", "100856"),
        ("threeDSRef", "AAAAAAAAA"),
        ("threeDSResponse[PaRes]", "PPPPPPPPP"),
        ("threeDSResponse[MD]", "MMMMMMMMM"),
        ("threeDSResponse[submit]", "Submit"),
    ]);
    assert!(sign(&swapped, "Threeds2Test60System").starts_with("c8a5c1"));
}

#[test]
fn guide_hosted_and_direct_examples_reproduce_exactly() {
    let hosted = fields(&[
        ("merchantID", "100001"),
        ("action", "SALE"),
        ("type", "1"),
        ("currencyCode", "826"),
        ("countryCode", "826"),
        ("amount", "680"),
        ("transactionUnique", "5de651c7c5379"),
        ("orderRef", "Test Transaction"),
        ("redirectURL", "https://myshop.com"),
    ]);
    assert_eq!(
        sign(&hosted, "Circle4Take40Idea"),
        "ba12b0766a3412782448f154be15e8f61eea390387b1b23d4688c82c9f28f81df593de5890426546cca365943cc7b5c4897c9721b663a0e17680e1e796f1ad55"
    );
    let direct = fields(&[
        ("merchantID", "100001"),
        ("action", "SALE"),
        ("type", "1"),
        ("currencyCode", "826"),
        ("countryCode", "826"),
        ("amount", "680"),
        ("transactionUnique", "5de65b552499e"),
        ("orderRef", "Test Transaction"),
        ("cardNumber", "4929 4212 3460 0821"),
        ("cardCVV", "356"),
        ("cardExpiryDate", "1219"),
        ("threeDSRequired", "N"),
        ("avscv2CheckRequired", "N"),
        ("duplicateDelay", "0"),
    ]);
    assert_eq!(
        sign(&direct, "Circle4Take40Idea"),
        "06b01e06c8fc761943d676d5f3aa2e9264758fed72e7bcb058a2a35cf23e8e45403099537bb0363054d6bc8ea951ce1ad86e582dbf0b435855b9c97507fcf844"
    );
}

#[test]
fn a_signature_survives_the_wire_and_a_browser_turning_crlf_into_lf() {
    let mut message = fields(&[
        ("customerAddress", "Flat 6\r\n347 Lavender Road"),
        ("amount", "1000"),
    ]);
    message.set(SIGNATURE_FIELD, sign(&message, "secret"));
    let received = Fields::parse(message.to_form_body().as_bytes());
    assert!(verify(&received, Some("secret")).is_ok());
    let mut browser_posted = received.clone();
    browser_posted.set("customerAddress", "Flat 6\n347 Lavender Road");
    assert!(verify(&browser_posted, Some("secret")).is_ok());
    browser_posted.set("amount", "1001");
    assert_eq!(
        verify(&browser_posted, Some("secret")),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn partial_signature_lists_roots_and_ignores_unlisted_extras() {
    let mut form = fields(&[
        ("merchantID", "100001"),
        ("amount", "680"),
        ("threeDSOptions[x]", "1"),
    ]);
    let signature = sign_partial(&form, "secret", &["merchantID", "amount", "threeDSOptions"]);
    assert!(
        signature.ends_with("|merchantID,amount,threeDSOptions"),
        "{signature}"
    );
    form.set(SIGNATURE_FIELD, signature);
    form.set("submit.x", "12");
    let verified = verify(&form, Some("secret")).expect("extras outside the list do not matter");
    assert!(
        verified.get("submit.x").is_none(),
        "an unsigned extra must not be vouched for"
    );
}
