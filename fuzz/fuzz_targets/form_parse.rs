//! `application/x-www-form-urlencoded` bodies as they arrive on the OAuth endpoints: the parser
//! and the component decoder must never panic, must agree with a strict reference parser, and
//! `single`/`required`/`all`/`has` must agree with each other.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::http::form::{Form, decode_component};
use tessera_fuzz::{KNOWN_NAMES, check_name, reference_decode, reference_form};

fuzz_target!(|data: &[u8]| {
    let parsed = Form::parse(data);
    if let Err(e) = &parsed {
        assert_eq!(e.code(), "invalid_request", "{e:?}");
    }
    if let Ok(form) = &parsed {
        for name in KNOWN_NAMES {
            check_name(form, name);
        }
    }

    // The same verdict and the same values as a parser written from the spec.
    let reference = reference_form(data);
    assert_eq!(parsed.is_ok(), reference.is_some(), "library {parsed:?}, reference {reference:?}");
    if let (Ok(form), Some(pairs)) = (&parsed, &reference) {
        for (name, _) in pairs {
            let expected: Vec<&str> = pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect();
            assert_eq!(form.all(name), expected, "values of {name:?}");
            check_name(form, name);
        }
    }

    if let Ok(text) = std::str::from_utf8(data) {
        let decoded = decode_component(text);
        assert_eq!(decoded.as_ref().ok(), reference_decode(text).as_ref(), "decode_component({text:?})");
        if let Ok(decoded) = decoded {
            // Whatever decodes must come back unchanged through a standard encoder.
            let encoded: String = form_urlencoded::byte_serialize(decoded.as_bytes()).collect();
            assert_eq!(decode_component(&encoded).as_deref(), Ok(decoded.as_str()), "round trip of {decoded:?}");
        }
    }
});
