//! The message layouts of every built-in type, read once from the descriptors compiled from the
//! vendored .proto files, with the Go JSON facts of `proto/gofields.tsv` folded in.

use std::collections::HashMap;

use prost_reflect::{Cardinality, DescriptorPool, Kind, MessageDescriptor};

/// The FileDescriptorSet that build.rs compiles from proto/.
const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kubernetes.fds"));
/// JSON names, inlining and zero-value rules from the Go types (scripts/gen-protobuf-fields.py).
const GO_FIELDS: &str = include_str!("../../proto/gofields.tsv");

/// A scalar protobuf type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scalar {
    Double,
    Float,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Sint32,
    Sint64,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
    Bool,
    String,
    Bytes,
}

/// What a field holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Type {
    Scalar(Scalar),
    /// A message, by index into [`Schema::messages`].
    Message(usize),
}

/// Messages whose JSON form is not an object of their fields (their Go types marshal
/// themselves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Special {
    None,
    /// `metav1.Time`: RFC 3339 with seconds, `null` when zero.
    Time,
    /// `metav1.MicroTime`: RFC 3339 with microseconds, `null` when zero.
    MicroTime,
    /// `metav1.Duration`: a Go duration string.
    Duration,
    /// `intstr.IntOrString`: a JSON number or string.
    IntOrString,
    /// `resource.Quantity`: a string.
    Quantity,
    /// `runtime.RawExtension`, `metav1.FieldsV1`, apiextensions `JSON`: embedded JSON bytes.
    RawJson,
    /// apiextensions `JSONSchemaPropsOrBool`: a schema or a boolean.
    PropsOrBool,
    /// apiextensions `JSONSchemaPropsOrArray`: a schema or an array of schemas.
    PropsOrArray,
    /// apiextensions `JSONSchemaPropsOrStringArray`: a schema or an array of strings.
    PropsOrStringArray,
    /// A Go slice type (`metav1.Verbs`, `ExtraValue`): the bare array of its `items`.
    Array,
}

/// One field of a message.
#[derive(Clone, Debug)]
pub(crate) struct Field {
    pub number: u32,
    /// The JSON key (the proto name unless the Go type says otherwise).
    pub json: String,
    pub ty: Type,
    /// `repeated` (lists and maps).
    pub repeated: bool,
    /// For a map field: the key and value types (the entry message is not walked).
    pub map: Option<(Scalar, Type)>,
    /// The Go field is a pointer.
    pub ptr: bool,
    /// The Go field has no `omitempty`.
    pub noomit: bool,
    /// The Go field is embedded with `json:",inline"`: its members are the parent's.
    pub inline: bool,
    /// The Go field is not in JSON at all (`json:"-"`).
    pub nojson: bool,
}

impl Field {
    /// Whether a zero value of this scalar is rendered in JSON (as Go renders it).
    pub fn keeps_zero(&self) -> bool {
        self.ptr || self.noomit
    }
}

/// One message type.
#[derive(Debug)]
pub(crate) struct Message {
    /// Fields in Go's declaration order (the order Go renders JSON in).
    pub fields: Vec<Field>,
    /// Indexes into `fields`, by field number (encoding order).
    pub by_number: Vec<usize>,
    pub special: Special,
}

impl Message {
    /// The index into `fields` of field `number`.
    pub fn field(&self, number: u32) -> Option<usize> {
        self.by_number
            .binary_search_by_key(&number, |&index| self.fields[index].number)
            .ok()
            .map(|position| self.by_number[position])
    }
}

/// Every message, and which message each `apiVersion`/`kind` is.
#[derive(Debug)]
pub struct Schema {
    pub(crate) messages: Vec<Message>,
    by_name: HashMap<String, usize>,
    /// (`apiVersion`, `kind`) to message.
    kinds: HashMap<(String, String), usize>,
}

#[derive(Default)]
struct GoField {
    json: Option<String>,
    ptr: bool,
    noomit: bool,
    inline: bool,
    nojson: bool,
}

impl Schema {
    /// Reads the compiled descriptors.
    pub(crate) fn load() -> Schema {
        let pool = DescriptorPool::decode(DESCRIPTORS).expect("the descriptors build.rs compiled decode");
        let mut go_fields: HashMap<&'static str, HashMap<&'static str, GoField>> = HashMap::new();
        let mut arrays: Vec<&str> = Vec::new();
        let mut groups: HashMap<&str, &str> = HashMap::new();
        let mut orders: HashMap<&str, Vec<&str>> = HashMap::new();
        for line in GO_FIELDS.lines().filter(|line| !line.starts_with('#') && !line.is_empty()) {
            let mut columns = line.split('\t');
            let (message, field, json, flags) = (
                columns.next().unwrap_or_default(),
                columns.next().unwrap_or_default(),
                columns.next().unwrap_or_default(),
                columns.next().unwrap_or_default(),
            );
            if field == "@group" {
                groups.insert(message, json);
                continue;
            }
            if field == "@order" {
                orders.insert(message, json.split(',').collect());
                continue;
            }
            if flags.split(',').any(|flag| flag == "array") {
                arrays.push(message);
                continue;
            }
            let entry = go_fields.entry(message).or_default().entry(field).or_default();
            if json != "-" && json != field {
                entry.json = Some(json.to_owned());
            }
            for flag in flags.split(',') {
                match flag {
                    "ptr" => entry.ptr = true,
                    "noomit" => entry.noomit = true,
                    "inline" => entry.inline = true,
                    "nojson" => entry.nojson = true,
                    _ => {}
                }
            }
        }

        let descriptors: Vec<MessageDescriptor> = pool.all_messages().filter(|m| !m.is_map_entry()).collect();
        let by_name: HashMap<String, usize> =
            descriptors.iter().enumerate().map(|(index, m)| (m.full_name().to_owned(), index)).collect();
        let type_of = |kind: Kind| -> Type {
            match kind {
                Kind::Double => Type::Scalar(Scalar::Double),
                Kind::Float => Type::Scalar(Scalar::Float),
                Kind::Int32 | Kind::Enum(_) => Type::Scalar(Scalar::Int32),
                Kind::Int64 => Type::Scalar(Scalar::Int64),
                Kind::Uint32 => Type::Scalar(Scalar::Uint32),
                Kind::Uint64 => Type::Scalar(Scalar::Uint64),
                Kind::Sint32 => Type::Scalar(Scalar::Sint32),
                Kind::Sint64 => Type::Scalar(Scalar::Sint64),
                Kind::Fixed32 => Type::Scalar(Scalar::Fixed32),
                Kind::Fixed64 => Type::Scalar(Scalar::Fixed64),
                Kind::Sfixed32 => Type::Scalar(Scalar::Sfixed32),
                Kind::Sfixed64 => Type::Scalar(Scalar::Sfixed64),
                Kind::Bool => Type::Scalar(Scalar::Bool),
                Kind::String => Type::Scalar(Scalar::String),
                Kind::Bytes => Type::Scalar(Scalar::Bytes),
                Kind::Message(message) => Type::Message(by_name[message.full_name()]),
            }
        };
        let scalar_of = |kind: Kind| match type_of(kind) {
            Type::Scalar(scalar) => scalar,
            Type::Message(_) => Scalar::String,
        };

        let mut messages = Vec::with_capacity(descriptors.len());
        for descriptor in &descriptors {
            let name = descriptor.full_name();
            let mut fields = Vec::new();
            // Go's declaration order (JSON's order); the .proto files list fields by number.
            let mut declared: Vec<_> = descriptor.fields().collect();
            if let Some(order) = orders.get(name) {
                declared
                    .sort_by_key(|field| order.iter().position(|n| *n == field.name()).unwrap_or(usize::MAX));
            }
            for field in declared {
                let go = go_fields
                    .get_mut(name)
                    .and_then(|fields| fields.remove(field.name()))
                    .unwrap_or_default();
                let map = if field.is_map() {
                    let Kind::Message(entry) = field.kind() else {
                        unreachable!("a map field's kind is its entry")
                    };
                    Some((
                        scalar_of(entry.map_entry_key_field().kind()),
                        type_of(entry.map_entry_value_field().kind()),
                    ))
                } else {
                    None
                };
                fields.push(Field {
                    number: field.number(),
                    json: go.json.unwrap_or_else(|| field.name().to_owned()),
                    ty: if map.is_some() { Type::Scalar(Scalar::Bytes) } else { type_of(field.kind()) },
                    repeated: field.cardinality() == Cardinality::Repeated,
                    map,
                    ptr: go.ptr,
                    noomit: go.noomit,
                    inline: go.inline,
                    nojson: go.nojson,
                });
            }
            let mut by_number: Vec<usize> = (0..fields.len()).collect();
            by_number.sort_by_key(|&index| fields[index].number);
            let special = match name {
                "k8s.io.apimachinery.pkg.apis.meta.v1.Time" => Special::Time,
                "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime" => Special::MicroTime,
                "k8s.io.apimachinery.pkg.apis.meta.v1.Duration" => Special::Duration,
                "k8s.io.apimachinery.pkg.util.intstr.IntOrString" => Special::IntOrString,
                "k8s.io.apimachinery.pkg.api.resource.Quantity" => Special::Quantity,
                "k8s.io.apimachinery.pkg.runtime.RawExtension"
                | "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1"
                | "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSON" => Special::RawJson,
                "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrBool" => {
                    Special::PropsOrBool
                }
                "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrArray" => {
                    Special::PropsOrArray
                }
                "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrStringArray" => {
                    Special::PropsOrStringArray
                }
                _ if arrays.contains(&name) => Special::Array,
                _ => Special::None,
            };
            messages.push(Message { fields, by_number, special });
        }

        let mut kinds = HashMap::new();
        for (index, descriptor) in descriptors.iter().enumerate() {
            let package = descriptor.package_name();
            let Some(group) = groups.get(package) else { continue };
            // Only top-level messages are kinds; nested ones do not occur in these files.
            let version = package.rsplit('.').next().unwrap_or_default();
            let api_version = match *group {
                "" => version.to_owned(),
                "meta.k8s.io" => continue,
                group => format!("{group}/{version}"),
            };
            kinds.insert((api_version, descriptor.name().to_owned()), index);
        }
        // metav1's kinds travel under every group version (Status, WatchEvent, DeleteOptions...):
        // they are looked up by kind alone, after the group's own (see `kind`).
        for (index, descriptor) in descriptors.iter().enumerate() {
            if descriptor.package_name() == "k8s.io.apimachinery.pkg.apis.meta.v1" {
                kinds.insert(("meta.k8s.io/v1".to_owned(), descriptor.name().to_owned()), index);
            }
        }
        Schema { messages, by_name, kinds }
    }

    /// The message of a kind: the group version's own, else metav1's (Status, WatchEvent, ...).
    pub fn kind(&self, api_version: &str, kind: &str) -> Option<usize> {
        self.kinds
            .get(&(api_version.to_owned(), kind.to_owned()))
            .or_else(|| self.kinds.get(&("meta.k8s.io/v1".to_owned(), kind.to_owned())))
            .copied()
    }

    /// Whether objects of `api_version`/`kind` travel as protobuf (built-in types do; custom
    /// resources and metav1 Tables do not).
    pub fn has_kind(&self, api_version: &str, kind: &str) -> bool {
        self.kinds.contains_key(&(api_version.to_owned(), kind.to_owned()))
    }

    /// A message by full name.
    pub(crate) fn message(&self, full_name: &str) -> usize {
        self.by_name[full_name]
    }
}
