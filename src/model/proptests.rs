//! Property tests of the model's parsers: whatever the text, a parser answers a value or
//! INVALID_ARGUMENT naming the field it was given, and never panics.

use proptest::prelude::*;

use super::*;

/// Text a hostile client might send: anything, with control characters, long runs and
/// non-Latin scripts more likely than uniform sampling would make them.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,300}",
        "[\\x00-\\x1f\\x7f]{0,20}",
        "[a-zA-Z0-9@._+:;/ -]{0,80}",
        "(.{0,4}){0,600}",
    ]
}

fn refused_by_field<T>(result: Result<T>, field: &str) -> bool {
    match result {
        Ok(_) => true,
        Err(Error::InvalidArgument(violations)) => {
            !violations.is_empty() && violations.iter().all(|v| v.field == field)
        }
        Err(_) => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_newtype_answers_a_value_or_names_its_field(text in hostile()) {
        prop_assert!(refused_by_field(Email::parse("f", &text), "f"));
        prop_assert!(refused_by_field(Password::parse("f", &text), "f"));
        prop_assert!(refused_by_field(PersonName::parse("f", &text), "f"));
        prop_assert!(refused_by_field(AccountName::parse("f", &text), "f"));
        prop_assert!(refused_by_field(Username::parse("f", &text), "f"));
        prop_assert!(refused_by_field(Login::parse("f", &text), "f"));
        prop_assert!(refused_by_field(TimeZone::parse("f", &text), "f"));
        prop_assert!(refused_by_field(Language::parse("f", &text), "f"));
        prop_assert!(refused_by_field(PhoneNumber::parse("f", &text), "f"));
        prop_assert!(refused_by_field(SipUri::parse("f", &text), "f"));
        prop_assert!(refused_by_field(Extension::parse("f", &text), "f"));
        prop_assert!(refused_by_field(parse_network("f", &text), "f"));
        prop_assert!(refused_by_field(caller_id_name("f", &text), "f"));
        prop_assert!(refused_by_field(pbx_username("f", &text), "f"));
        prop_assert!(refused_by_field(normalize_role_key("f", &text), "f"));
        prop_assert!(refused_by_field(TenantRef::parse("f", &text), "f"));
        prop_assert!(refused_by_field(UserId::parse("f", &text), "f"));
        prop_assert!(refused_by_field(TeamId::parse("f", &text), "f"));
        prop_assert!(refused_by_field(SessionId::parse("f", &text), "f"));
        prop_assert!(refused_by_field(parse_tags("f", std::slice::from_ref(&text)), "f"));
    }

    #[test]
    fn a_value_that_parsed_parses_again_to_itself(text in hostile()) {
        if let Ok(email) = Email::parse("f", &text) {
            prop_assert_eq!(Email::parse("f", email.as_str()).ok(), Some(email));
        }
        if let Ok(name) = PersonName::parse("f", &text) {
            prop_assert_eq!(PersonName::parse("f", name.as_str()).ok(), Some(name));
        }
        if let Ok(key) = normalize_role_key("f", &text) {
            prop_assert_eq!(normalize_role_key("f", &key).ok(), Some(key));
        }
    }

    #[test]
    fn role_key_lists_are_bounded_whatever_their_length(keys in prop::collection::vec(hostile(), 0..150)) {
        let result = normalize_role_keys("roles", &keys);
        if keys.len() > limits::ROLES {
            prop_assert!(result.is_err());
        }
        prop_assert!(refused_by_field(result, "roles"));
    }
}
