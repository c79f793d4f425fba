//! One run line of the actionloop protocol, read without building a JSON tree of the whole line:
//! `value` becomes the handler's [`Value`]; every other key stays a string borrowed from the
//! line (copied only when it has escapes), or, for the rare non-string field, a [`Value`].
//! This is on the response path: it allocates only for `value` itself and one small list.

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer as _;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserialize, DeserializeSeed, MapAccess, SeqAccess, Visitor};
#[cfg(test)]
use serde_json::Map;
use serde_json::Value;

/// The keys of a run line other than `value`.
pub(crate) type Fields<'a> = Vec<(Cow<'a, str>, Field<'a>)>;

/// A run-line field other than `value`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Field<'a> {
    /// A JSON string (the proxy sends every field as one).
    Str(Cow<'a, str>),
    /// Any other JSON value.
    Other(Value),
}

impl Field<'_> {
    /// A string as-is, anything else as its JSON text (what the official launcher puts in
    /// `__OW_*`).
    pub(crate) fn text(&self) -> Cow<'_, str> {
        match self {
            Self::Str(s) => Cow::Borrowed(s),
            Self::Other(Value::String(s)) => Cow::Borrowed(s),
            Self::Other(v) => Cow::Owned(v.to_string()),
        }
    }
}

/// The field `key` of `fields` (the last one when a key repeats, as in a JSON object).
pub(crate) fn get<'f, 'a>(fields: &'f Fields<'a>, key: &str) -> Option<&'f Field<'a>> {
    fields.iter().rev().find(|(k, _)| k == key).map(|(_, f)| f)
}

/// Reads one stdin line: `{"value": …, "namespace": …, …}`. Any malformed input is an `Err`
/// with the reason (the same reasons a full parse into a [`Value`] gives).
pub(crate) fn parse(line: &[u8]) -> Result<(Value, Fields<'_>), String> {
    let trimmed = line.strip_suffix(b"\n").unwrap_or(line);
    let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
    let mut de = serde_json::Deserializer::from_slice(trimmed);
    let fast = de
        .deserialize_map(LineVisitor)
        .and_then(|parsed| de.end().map(|()| parsed));
    match fast {
        Ok((Some(value), fields)) => Ok((value, fields)),
        // the error path: the full parse says what is wrong, in the words it always used
        _ => Err(reason(trimmed)),
    }
}

/// Why `line` is not a run line.
fn reason(line: &[u8]) -> String {
    match serde_json::from_slice::<Value>(line) {
        Err(e) => format!("malformed activation input (not JSON): {e}"),
        Ok(Value::Object(fields)) if !fields.contains_key("value") => {
            "malformed activation input: no `value` key".to_string()
        }
        Ok(Value::Object(_)) => {
            "malformed activation input: the line could not be read".to_string()
        }
        Ok(_) => "malformed activation input: expected a JSON object".to_string(),
    }
}

struct LineVisitor;

impl<'de> Visitor<'de> for LineVisitor {
    type Value = (Option<Value>, Fields<'de>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut value = None;
        // the proxy sends eight keys
        let mut fields: Fields<'de> = Vec::with_capacity(10);
        while let Some(key) = map.next_key_seed(StrSeed)? {
            if key == "value" {
                value = Some(map.next_value::<Value>()?);
                continue;
            }
            let field = map.next_value_seed(FieldSeed)?;
            match fields.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = field,
                None => fields.push((key, field)),
            }
        }
        Ok((value, fields))
    }
}

/// A string, borrowed from the line when it has no escapes.
struct StrSeed;

impl<'de> DeserializeSeed<'de> for StrSeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(StrVisitor)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// A field value: a borrowed string, or any other JSON value as a [`Value`].
struct FieldSeed;

impl<'de> DeserializeSeed<'de> for FieldSeed {
    type Value = Field<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Owned(v.to_string())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Owned(v)))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Field::Other(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Field::Other(Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Field::Other(Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Field::Other(Value::from(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Other(Value::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Other(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq)).map(Field::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(Field::Other)
    }
}

/// The fields as a JSON object (tests).
#[cfg(test)]
pub(crate) fn to_map(fields: &Fields<'_>) -> Map<String, Value> {
    fields
        .iter()
        .map(|(k, f)| {
            let v = match f {
                Field::Str(s) => Value::String(s.to_string()),
                Field::Other(v) => v.clone(),
            };
            (k.to_string(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// What the full parse of a line gives: `value` and the other keys.
    fn full(line: &[u8]) -> Result<(Value, Map<String, Value>), ()> {
        let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(line) else {
            return Err(());
        };
        let v = m.remove("value").ok_or(())?;
        Ok((v, m))
    }

    #[test]
    fn reads_value_and_borrows_plain_strings() {
        let line =
            br#"{"value":{"a":[1,2]},"action_name":"/ns/a","deadline":"17","esc":"a\"b","n":7}"#;
        let (value, fields) = parse(line).unwrap();
        assert_eq!(value, json!({"a": [1, 2]}));
        assert!(matches!(
            get(&fields, "action_name"),
            Some(Field::Str(Cow::Borrowed("/ns/a")))
        ));
        assert_eq!(get(&fields, "esc").unwrap().text(), "a\"b");
        assert_eq!(get(&fields, "n").unwrap().text(), "7");
        assert_eq!(get(&fields, "missing"), None);
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value_as_a_json_object_does() {
        let line = br#"{"value":1,"k":"a","value":2,"k":{"x":null}}"#;
        let (value, fields) = parse(line).unwrap();
        let (v, m) = full(line).unwrap();
        assert_eq!((value, to_map(&fields)), (v, m));
    }

    #[test]
    fn malformed_lines_get_the_full_parse_reasons() {
        for (line, start) in [
            (&b"not json"[..], "malformed activation input (not JSON): "),
            (b"[1]", "malformed activation input: expected a JSON object"),
            (
                b"\"s\"",
                "malformed activation input: expected a JSON object",
            ),
            (
                b"{\"novalue\":1}",
                "malformed activation input: no `value` key",
            ),
            (
                b"{\"value\":1} x",
                "malformed activation input (not JSON): ",
            ),
            (b"", "malformed activation input (not JSON): "),
        ] {
            let msg = parse(line).unwrap_err();
            assert!(msg.starts_with(start), "{msg}");
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_full_parse_on_any_bytes(line in prop::collection::vec(any::<u8>(), 0..48)) {
            match (parse(&line), full(&line)) {
                (Ok((v, f)), Ok((fv, fm))) => {
                    prop_assert_eq!(v, fv);
                    prop_assert_eq!(to_map(&f), fm);
                }
                (Err(_), Err(())) => {}
                (a, b) => prop_assert!(false, "fast {:?} full {:?}", a.map(|x| x.0), b.map(|x| x.0)),
            }
        }

        #[test]
        fn agrees_with_the_full_parse_on_objects(
            m in prop::collection::btree_map("value|[a-z\"\\\\]{0,4}", prop_oneof![
                Just(json!(null)), any::<i64>().prop_map(Value::from), ".{0,6}".prop_map(Value::from),
                Just(json!([1, {"a": "b"}])), Just(json!({"k": [true]})), Just(json!(1.5)),
            ], 0..6)
        ) {
            let line = Value::Object(m.into_iter().collect()).to_string();
            let line = line.as_bytes();
            match (parse(line), full(line)) {
                (Ok((v, f)), Ok((fv, fm))) => {
                    prop_assert_eq!(v, fv);
                    prop_assert_eq!(to_map(&f), fm);
                }
                (Err(_), Err(())) => {}
                (a, b) => prop_assert!(false, "fast {:?} full {:?}", a.map(|x| x.0), b.map(|x| x.0)),
            }
        }
    }
}
