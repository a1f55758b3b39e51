//! JSON to protobuf and back, for one message, driven by the [`Schema`].
//!
//! Encoding writes what Go's generated marshallers write for the same object: fields in number
//! order, map entries sorted by key, and the always-present parts of kube's special types. A
//! JSON field the message does not have is dropped, as Go's decoder drops it. Decoding renders
//! what Go's `encoding/json` renders for the decoded struct: JSON names and inlined members from
//! the Go tags, zero scalars only where the Go field is a pointer or has no `omitempty`, and the
//! special types in their JSON forms.

use base64::Engine;
use prost::encoding::{decode_varint, encode_varint, encoded_len_varint};
use serde_json::{Map, Number, Value};

use super::schema::{Field, Scalar, Schema, Special, Type};
use super::ProtobufError;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn key(out: &mut Vec<u8>, number: u32, wire: u8) {
    encode_varint(((number as u64) << 3) | wire as u64, out);
}

/// Writes a length-delimited field whose body `body` writes after the length.
fn nested(
    out: &mut Vec<u8>,
    number: u32,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), ProtobufError>,
) -> Result<(), ProtobufError> {
    key(out, number, LEN);
    let start = out.len();
    out.push(0);
    body(out)?;
    let len = out.len() - start - 1;
    if len < 0x80 {
        out[start] = len as u8;
    } else {
        // Make room for the longer length, then write it in place.
        let width = encoded_len_varint(len as u64);
        out.splice(start..start + 1, std::iter::repeat_n(0, width));
        let mut prefix = Vec::with_capacity(width);
        encode_varint(len as u64, &mut prefix);
        out[start..start + width].copy_from_slice(&prefix);
    }
    Ok(())
}

fn bytes_field(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    key(out, number, LEN);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn varint_field(out: &mut Vec<u8>, number: u32, value: u64) {
    key(out, number, VARINT);
    encode_varint(value, out);
}

fn type_error(expected: &str, value: &Value) -> ProtobufError {
    let found = match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    ProtobufError::new(format!("expected {expected}, found {found}"))
}

impl Schema {
    /// Encodes `value`, the JSON of message `message`, appending to `out`.
    pub(crate) fn encode_message(
        &self,
        message: usize,
        value: &Value,
        out: &mut Vec<u8>,
    ) -> Result<(), ProtobufError> {
        let info = &self.messages[message];
        match info.special {
            Special::None => {}
            special => return self.encode_special(special, message, value, out),
        }
        let Value::Object(object) = value else { return Err(type_error("an object", value)) };
        for &index in &info.by_number {
            let field = &info.fields[index];
            if field.nojson {
                continue;
            }
            if field.inline {
                if let Type::Message(child) = field.ty {
                    nested(out, field.number, |out| self.encode_message(child, value, out))?;
                }
                continue;
            }
            let Some(value) = object.get(&field.json) else { continue };
            self.encode_field(field, value, out).map_err(|error| error.at(&field.json))?;
        }
        Ok(())
    }

    fn encode_field(&self, field: &Field, value: &Value, out: &mut Vec<u8>) -> Result<(), ProtobufError> {
        if value.is_null() {
            // Go writes a non-pointer Time even when zero, as an empty message; a null Time
            // then decodes back to null.
            if let Type::Message(child) = field.ty {
                let special = self.messages[child].special;
                if !field.ptr && !field.repeated && matches!(special, Special::Time | Special::MicroTime) {
                    bytes_field(out, field.number, &[]);
                }
            }
            return Ok(());
        }
        if let Some((key_type, value_type)) = field.map {
            let Value::Object(entries) = value else { return Err(type_error("an object", value)) };
            let mut keys: Vec<&String> = entries.keys().collect();
            keys.sort();
            for name in keys {
                let entry = &entries[name];
                nested(out, field.number, |out| {
                    self.encode_scalar(key_type, 1, &Value::String(name.clone()), out)?;
                    match (value_type, entry) {
                        // Go writes a map's zero value too: a null Time is an empty message.
                        (Type::Message(_), Value::Null) => {
                            bytes_field(out, 2, &[]);
                            Ok(())
                        }
                        _ => self.encode_value(value_type, 2, entry, out),
                    }
                })
                .map_err(|error| error.at(name))?;
            }
            return Ok(());
        }
        if field.repeated {
            let Value::Array(items) = value else { return Err(type_error("an array", value)) };
            for (position, item) in items.iter().enumerate() {
                self.encode_value(field.ty, field.number, item, out)
                    .map_err(|error| error.at(&format!("[{position}]")))?;
            }
            return Ok(());
        }
        self.encode_value(field.ty, field.number, value, out)
    }

    fn encode_value(
        &self,
        ty: Type,
        number: u32,
        value: &Value,
        out: &mut Vec<u8>,
    ) -> Result<(), ProtobufError> {
        match ty {
            Type::Scalar(scalar) => self.encode_scalar(scalar, number, value, out),
            Type::Message(child) => nested(out, number, |out| self.encode_message(child, value, out)),
        }
    }

    fn encode_scalar(
        &self,
        scalar: Scalar,
        number: u32,
        value: &Value,
        out: &mut Vec<u8>,
    ) -> Result<(), ProtobufError> {
        let integer = |value: &Value| -> Result<i64, ProtobufError> {
            value
                .as_i64()
                .or_else(|| value.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18).map(|f| f as i64))
                .ok_or_else(|| type_error("an integer", value))
        };
        match scalar {
            Scalar::String => {
                let Value::String(text) = value else { return Err(type_error("a string", value)) };
                bytes_field(out, number, text.as_bytes());
            }
            Scalar::Bytes => {
                let Value::String(text) = value else { return Err(type_error("a base64 string", value)) };
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|error| ProtobufError::new(format!("illegal base64 data: {error}")))?;
                bytes_field(out, number, &bytes);
            }
            Scalar::Bool => {
                let Value::Bool(flag) = value else { return Err(type_error("a boolean", value)) };
                varint_field(out, number, *flag as u64);
            }
            Scalar::Int32 | Scalar::Int64 => varint_field(out, number, integer(value)? as u64),
            Scalar::Uint32 | Scalar::Uint64 => {
                let unsigned = value.as_u64().ok_or_else(|| type_error("an unsigned integer", value))?;
                varint_field(out, number, unsigned);
            }
            Scalar::Sint32 | Scalar::Sint64 => {
                let signed = integer(value)?;
                varint_field(out, number, ((signed << 1) ^ (signed >> 63)) as u64);
            }
            Scalar::Fixed32 | Scalar::Sfixed32 | Scalar::Float => {
                key(out, number, FIXED32);
                let bits = match scalar {
                    Scalar::Float => {
                        (value.as_f64().ok_or_else(|| type_error("a number", value))? as f32).to_bits()
                    }
                    _ => integer(value)? as u32,
                };
                out.extend_from_slice(&bits.to_le_bytes());
            }
            Scalar::Fixed64 | Scalar::Sfixed64 | Scalar::Double => {
                key(out, number, FIXED64);
                let bits = match scalar {
                    Scalar::Double => value.as_f64().ok_or_else(|| type_error("a number", value))?.to_bits(),
                    _ => integer(value)? as u64,
                };
                out.extend_from_slice(&bits.to_le_bytes());
            }
        }
        Ok(())
    }

    fn encode_special(
        &self,
        special: Special,
        message: usize,
        value: &Value,
        out: &mut Vec<u8>,
    ) -> Result<(), ProtobufError> {
        let schema_props =
            || self.message("k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps");
        match special {
            Special::None => unreachable!("plain messages are encoded field by field"),
            Special::Time | Special::MicroTime => {
                let Value::String(text) = value else { return Err(type_error("an RFC 3339 time", value)) };
                let (seconds, nanos) = parse_time(text)?;
                let nanos = if special == Special::Time { 0 } else { nanos / 1000 * 1000 };
                varint_field(out, 1, seconds as u64);
                varint_field(out, 2, nanos as u64);
            }
            Special::Duration => {
                let Value::String(text) = value else { return Err(type_error("a duration", value)) };
                varint_field(out, 1, parse_go_duration(text)? as u64);
            }
            Special::IntOrString => match value {
                Value::String(text) => {
                    varint_field(out, 1, 1);
                    varint_field(out, 2, 0);
                    bytes_field(out, 3, text.as_bytes());
                }
                Value::Number(_) => {
                    let number = value.as_i64().ok_or_else(|| type_error("an integer or a string", value))?;
                    varint_field(out, 1, 0);
                    varint_field(out, 2, number as i32 as i64 as u64);
                    bytes_field(out, 3, b"");
                }
                _ => return Err(type_error("an integer or a string", value)),
            },
            Special::Quantity => match value {
                Value::String(text) => bytes_field(out, 1, text.as_bytes()),
                Value::Number(number) => bytes_field(out, 1, number.to_string().as_bytes()),
                _ => return Err(type_error("a quantity", value)),
            },
            Special::RawJson => {
                let raw = serde_json::to_vec(value).map_err(|error| ProtobufError::new(error.to_string()))?;
                bytes_field(out, 1, &raw);
            }
            Special::PropsOrBool => match value {
                Value::Bool(flag) => varint_field(out, 1, *flag as u64),
                Value::Object(_) => {
                    varint_field(out, 1, 1);
                    nested(out, 2, |out| self.encode_message(schema_props(), value, out))?;
                }
                _ => return Err(type_error("a schema or a boolean", value)),
            },
            Special::PropsOrArray => match value {
                Value::Array(items) => {
                    for item in items {
                        nested(out, 2, |out| self.encode_message(schema_props(), item, out))?;
                    }
                }
                Value::Object(_) => nested(out, 1, |out| self.encode_message(schema_props(), value, out))?,
                _ => return Err(type_error("a schema or an array of schemas", value)),
            },
            Special::PropsOrStringArray => match value {
                Value::Array(items) => {
                    for item in items {
                        self.encode_scalar(Scalar::String, 2, item, out)?;
                    }
                }
                Value::Object(_) => nested(out, 1, |out| self.encode_message(schema_props(), value, out))?,
                _ => return Err(type_error("a schema or an array of strings", value)),
            },
            Special::Array => {
                let Value::Array(items) = value else { return Err(type_error("an array", value)) };
                let field = &self.messages[message].fields[0];
                for item in items {
                    self.encode_value(field.ty, field.number, item, out)?;
                }
            }
        }
        Ok(())
    }

    /// Decodes message `message` from `bytes` into its JSON.
    pub(crate) fn decode_message(&self, message: usize, bytes: &[u8]) -> Result<Value, ProtobufError> {
        let info = &self.messages[message];
        if info.special != Special::None {
            return self.decode_special(info.special, message, bytes);
        }
        let mut slots: Vec<Option<Value>> = vec![None; info.fields.len()];
        let mut reader = Reader(bytes);
        while let Some((number, wire)) = reader.key()? {
            let Some(index) = info.field(number) else {
                reader.skip(wire)?;
                continue;
            };
            let field = &info.fields[index];
            let slot = &mut slots[index];
            let result = (|| -> Result<(), ProtobufError> {
                if let Some((key_type, value_type)) = field.map {
                    let entry = reader.len_delimited(wire)?;
                    let (name, value) = self.decode_map_entry(key_type, value_type, entry)?;
                    let map = slot.get_or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(map) = map {
                        map.insert(name, value);
                    }
                } else if field.repeated {
                    let list = slot.get_or_insert_with(|| Value::Array(Vec::new()));
                    let Value::Array(list) = list else { unreachable!("a list slot holds an array") };
                    match (field.ty, wire) {
                        (Type::Scalar(scalar), LEN) if scalar_packable(scalar) => {
                            let mut packed = Reader(reader.len_delimited(wire)?);
                            while !packed.0.is_empty() {
                                list.push(packed.scalar(scalar, scalar_wire(scalar))?);
                            }
                        }
                        _ => list.push(self.decode_value(field.ty, wire, &mut reader)?),
                    }
                } else {
                    let value = self.decode_value(field.ty, wire, &mut reader)?;
                    // A repeated occurrence of a message field merges in protobuf; Go's
                    // marshallers never write one, so the last occurrence wins here.
                    *slot = Some(value);
                }
                Ok(())
            })();
            result.map_err(|error| error.at(&field.json))?;
        }
        let mut object = Map::new();
        for (field, slot) in info.fields.iter().zip(slots) {
            if field.nojson {
                continue;
            }
            let value = match slot {
                Some(value) => value,
                None => continue,
            };
            if field.inline {
                if let Value::Object(members) = value {
                    object.extend(members);
                }
                continue;
            }
            if !field.repeated && !field.keeps_zero() && is_zero_scalar(field.ty, &value) {
                continue;
            }
            object.insert(field.json.clone(), value);
        }
        Ok(Value::Object(object))
    }

    fn decode_value(&self, ty: Type, wire: u8, reader: &mut Reader<'_>) -> Result<Value, ProtobufError> {
        match ty {
            Type::Scalar(scalar) => reader.scalar(scalar, wire),
            Type::Message(child) => {
                let bytes = reader.len_delimited(wire)?;
                self.decode_message(child, bytes)
            }
        }
    }

    fn decode_map_entry(
        &self,
        key_type: Scalar,
        value_type: Type,
        bytes: &[u8],
    ) -> Result<(String, Value), ProtobufError> {
        let mut reader = Reader(bytes);
        let (mut name, mut value) = (None, None);
        while let Some((number, wire)) = reader.key()? {
            match number {
                1 => name = Some(reader.scalar(key_type, wire)?),
                2 => value = Some(self.decode_value(value_type, wire, &mut reader)?),
                _ => reader.skip(wire)?,
            }
        }
        let name = match name {
            Some(Value::String(text)) => text,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let value = match value {
            Some(value) => value,
            // An absent value is the zero value of its type.
            None => match value_type {
                Type::Scalar(scalar) => zero_scalar(scalar),
                Type::Message(child) => self.decode_message(child, &[])?,
            },
        };
        Ok((name, value))
    }

    fn decode_special(&self, special: Special, message: usize, bytes: &[u8]) -> Result<Value, ProtobufError> {
        let schema_props =
            || self.message("k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps");
        let mut fields: Vec<(u32, u8, &[u8], u64)> = Vec::new();
        let mut reader = Reader(bytes);
        while let Some((number, wire)) = reader.key()? {
            match wire {
                VARINT => fields.push((number, wire, &[], reader.varint()?)),
                LEN => fields.push((number, wire, reader.len_delimited(wire)?, 0)),
                _ => reader.skip(wire)?,
            }
        }
        let varint = |number: u32| fields.iter().rev().find(|f| f.0 == number && f.1 == VARINT).map(|f| f.3);
        let bytes_of = |number: u32| fields.iter().rev().find(|f| f.0 == number && f.1 == LEN).map(|f| f.2);
        let text = |number: u32| -> Result<String, ProtobufError> {
            let bytes = bytes_of(number).unwrap_or_default();
            String::from_utf8(bytes.to_vec()).map_err(|_| ProtobufError::new("a string is not UTF-8"))
        };
        Ok(match special {
            Special::None => unreachable!("plain messages are decoded field by field"),
            Special::Time | Special::MicroTime => {
                let seconds = varint(1).unwrap_or(0) as i64;
                let nanos = varint(2).unwrap_or(0) as i64 as i32;
                // An empty message is Go's zero time, as is year 1.
                if bytes.is_empty() || seconds == GO_ZERO_TIME {
                    Value::Null
                } else {
                    Value::String(format_time(
                        seconds,
                        if special == Special::Time { None } else { Some(nanos) },
                    )?)
                }
            }
            Special::Duration => Value::String(format_go_duration(varint(1).unwrap_or(0) as i64)),
            Special::IntOrString => {
                if varint(1).unwrap_or(0) == 1 {
                    Value::String(text(3)?)
                } else {
                    Value::Number(Number::from(varint(2).unwrap_or(0) as i64 as i32))
                }
            }
            Special::Quantity => {
                let quantity = text(1)?;
                Value::String(if quantity.is_empty() { "0".into() } else { quantity })
            }
            Special::RawJson => match bytes_of(1) {
                None | Some([]) => Value::Null,
                Some(raw) if raw.starts_with(&super::MAGIC) => self.decode_object(raw)?,
                Some(raw) => serde_json::from_slice(raw)
                    .map_err(|error| ProtobufError::new(format!("embedded JSON is not valid: {error}")))?,
            },
            Special::PropsOrBool => match bytes_of(2) {
                Some(schema) => self.decode_message(schema_props(), schema)?,
                None => Value::Bool(varint(1).unwrap_or(0) != 0),
            },
            Special::PropsOrArray | Special::PropsOrStringArray => {
                let items: Vec<&[u8]> =
                    fields.iter().filter(|f| f.0 == 2 && f.1 == LEN).map(|f| f.2).collect();
                if !items.is_empty() {
                    let mut array = Vec::with_capacity(items.len());
                    for item in items {
                        array.push(if special == Special::PropsOrArray {
                            self.decode_message(schema_props(), item)?
                        } else {
                            Value::String(
                                String::from_utf8(item.to_vec())
                                    .map_err(|_| ProtobufError::new("a string is not UTF-8"))?,
                            )
                        });
                    }
                    Value::Array(array)
                } else if let Some(schema) = bytes_of(1) {
                    self.decode_message(schema_props(), schema)?
                } else {
                    Value::Null
                }
            }
            Special::Array => {
                let field = &self.messages[message].fields[0];
                let mut array = Vec::new();
                let mut reader = Reader(bytes);
                while let Some((number, wire)) = reader.key()? {
                    if number == field.number {
                        array.push(self.decode_value(field.ty, wire, &mut reader)?);
                    } else {
                        reader.skip(wire)?;
                    }
                }
                Value::Array(array)
            }
        })
    }
}

/// Go's zero `time.Time` (January 1, year 1, UTC) in Unix seconds.
const GO_ZERO_TIME: i64 = -62_135_596_800;

fn scalar_packable(scalar: Scalar) -> bool {
    !matches!(scalar, Scalar::String | Scalar::Bytes)
}

fn scalar_wire(scalar: Scalar) -> u8 {
    match scalar {
        Scalar::Double | Scalar::Fixed64 | Scalar::Sfixed64 => FIXED64,
        Scalar::Float | Scalar::Fixed32 | Scalar::Sfixed32 => FIXED32,
        Scalar::String | Scalar::Bytes => LEN,
        _ => VARINT,
    }
}

fn zero_scalar(scalar: Scalar) -> Value {
    match scalar {
        Scalar::String | Scalar::Bytes => Value::String(String::new()),
        Scalar::Bool => Value::Bool(false),
        Scalar::Double | Scalar::Float => Value::from(0.0),
        _ => Value::from(0),
    }
}

fn is_zero_scalar(ty: Type, value: &Value) -> bool {
    match (ty, value) {
        (Type::Message(_), _) => false,
        (_, Value::String(text)) => text.is_empty(),
        (_, Value::Bool(flag)) => !flag,
        (_, Value::Number(number)) => number.as_f64() == Some(0.0),
        _ => false,
    }
}

/// A cursor over protobuf bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ProtobufError> {
        decode_varint(&mut self.0).map_err(|_| ProtobufError::new("a varint is truncated or too long"))
    }

    fn key(&mut self) -> Result<Option<(u32, u8)>, ProtobufError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = (key >> 3) as u32;
        if number == 0 {
            return Err(ProtobufError::new("field number 0"));
        }
        Ok(Some((number, (key & 7) as u8)))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], ProtobufError> {
        if self.0.len() < len {
            return Err(ProtobufError::new("a field is truncated"));
        }
        let (head, tail) = self.0.split_at(len);
        self.0 = tail;
        Ok(head)
    }

    fn len_delimited(&mut self, wire: u8) -> Result<&'a [u8], ProtobufError> {
        if wire != LEN {
            return Err(ProtobufError::new(format!(
                "wire type {wire} where a length-delimited field belongs"
            )));
        }
        let len = self.varint()?;
        self.take(usize::try_from(len).map_err(|_| ProtobufError::new("a length overflows"))?)
    }

    fn skip(&mut self, wire: u8) -> Result<(), ProtobufError> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.len_delimited(wire).map(drop),
            FIXED32 => self.take(4).map(drop),
            other => Err(ProtobufError::new(format!("unsupported wire type {other}"))),
        }
    }

    fn scalar(&mut self, scalar: Scalar, wire: u8) -> Result<Value, ProtobufError> {
        let expected = scalar_wire(scalar);
        if wire != expected {
            return Err(ProtobufError::new(format!("wire type {wire} where {expected} belongs")));
        }
        Ok(match scalar {
            Scalar::String => Value::String(
                String::from_utf8(self.len_delimited(wire)?.to_vec())
                    .map_err(|_| ProtobufError::new("a string is not UTF-8"))?,
            ),
            Scalar::Bytes => {
                Value::String(base64::engine::general_purpose::STANDARD.encode(self.len_delimited(wire)?))
            }
            Scalar::Bool => Value::Bool(self.varint()? != 0),
            Scalar::Int32 => Value::from(self.varint()? as i64 as i32),
            Scalar::Int64 => Value::from(self.varint()? as i64),
            Scalar::Uint32 => Value::from(self.varint()? as u32),
            Scalar::Uint64 => Value::from(self.varint()?),
            Scalar::Sint32 | Scalar::Sint64 => {
                let raw = self.varint()?;
                Value::from(((raw >> 1) as i64) ^ -((raw & 1) as i64))
            }
            Scalar::Fixed32 => Value::from(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"))),
            Scalar::Sfixed32 => Value::from(i32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"))),
            Scalar::Float => float(f32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as f64),
            Scalar::Fixed64 => Value::from(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"))),
            Scalar::Sfixed64 => Value::from(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"))),
            Scalar::Double => float(f64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"))),
        })
    }
}

/// A float as Go's encoding/json writes it: integral values without a fraction.
fn float(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        Value::from(value as i64)
    } else {
        Number::from_f64(value).map(Value::Number).unwrap_or(Value::Null)
    }
}

/// Parses an RFC 3339 time (any offset) into Unix seconds and nanoseconds.
pub(crate) fn parse_time(text: &str) -> Result<(i64, i32), ProtobufError> {
    let timestamp: jiff::Timestamp = text
        .parse()
        .map_err(|error| ProtobufError::new(format!("{text:?} is not an RFC 3339 time: {error}")))?;
    Ok((timestamp.as_second(), timestamp.subsec_nanosecond()))
}

/// Formats Unix seconds as RFC 3339 in UTC, with microseconds when `nanos` is given.
fn format_time(seconds: i64, nanos: Option<i32>) -> Result<String, ProtobufError> {
    let timestamp = jiff::Timestamp::from_second(seconds)
        .map_err(|error| ProtobufError::new(format!("time {seconds} is out of range: {error}")))?;
    let base = timestamp.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    Ok(match nanos {
        None => format!("{base}Z"),
        Some(nanos) => format!("{base}.{:06}Z", nanos.max(0) / 1000),
    })
}

/// Go's `time.Duration.String()`.
pub(crate) fn format_go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let negative = nanos < 0;
    let mut rest = nanos.unsigned_abs();
    let mut text = String::new();
    if rest < 1_000_000_000 {
        // Below a second: one unit, with a fraction.
        let (unit, scale) = if rest < 1_000 {
            ("ns", 1)
        } else if rest < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        text.push_str(&fraction(rest, scale));
        text.push_str(unit);
    } else {
        let hours = rest / 3_600_000_000_000;
        rest %= 3_600_000_000_000;
        let minutes = rest / 60_000_000_000;
        rest %= 60_000_000_000;
        if hours > 0 {
            text.push_str(&format!("{hours}h"));
        }
        if hours > 0 || minutes > 0 {
            text.push_str(&format!("{minutes}m"));
        }
        text.push_str(&fraction(rest, 1_000_000_000));
        text.push('s');
    }
    if negative {
        text.insert(0, '-');
    }
    text
}

fn fraction(value: u64, scale: u64) -> String {
    let whole = value / scale;
    let part = value % scale;
    if part == 0 {
        return whole.to_string();
    }
    let digits = scale.to_string().len() - 1;
    let fraction = format!("{part:0digits$}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

/// Parses a Go duration string ("1h2m3.5s", "300ms", "-1.5h").
pub(crate) fn parse_go_duration(text: &str) -> Result<i64, ProtobufError> {
    let invalid = || ProtobufError::new(format!("time: invalid duration {text:?}"));
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(invalid)?;
        let number: f64 = rest[..number_end].parse().map_err(|_| invalid())?;
        rest = &rest[number_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(invalid()),
        };
        total += number * scale;
        rest = &rest[unit_end..];
    }
    let nanos = total.round() as i64;
    Ok(if negative { -nanos } else { nanos })
}
