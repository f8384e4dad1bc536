//! Reading JSON from clients so that an error names the field at fault.
//!
//! serde_json alone says `invalid type: integer 5, expected a string at line 1 column 27`; a
//! person fixing the request wants to know it was `text`. Every body and frame the services
//! decode goes through [`from_json`], which tracks the path to the value that failed.

use serde::de::DeserializeOwned;

/// Parses `bytes` as a `T`. On failure, what went wrong, starting with the field's path (such as
/// `text` or `items[2].time`) when a field is at fault rather than the document as a whole.
pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed: T = serde_path_to_error::deserialize(&mut deserializer).map_err(describe)?;
    // Trailing characters after the value are an error too, as in `serde_json::from_slice`.
    deserializer.end().map_err(|e| e.to_string())?;
    Ok(parsed)
}

fn describe(error: serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = error.path().to_string();
    if path == "." {
        error.into_inner().to_string()
    } else {
        format!("field {path}: {}", error.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // read only through Debug
    struct Comment {
        author: String,
        text: String,
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named() {
        let err = from_json::<Comment>(br#"{"author": "a", "text": 5}"#).unwrap_err();
        assert!(err.starts_with("field text: invalid type"), "{err}");
    }

    #[test]
    fn whole_document_faults_have_no_field() {
        let err = from_json::<Comment>(br#""just text""#).unwrap_err();
        assert!(err.starts_with("invalid type"), "{err}");
        let err = from_json::<Comment>(br#"{"author": "a", "text": "t"} x"#).unwrap_err();
        assert!(err.contains("trailing"), "{err}");
        assert!(from_json::<Comment>(br#"{"author": "a", "text": "t"}"#).is_ok());
    }
}
