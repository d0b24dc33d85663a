//! Request message types read from descriptor sets, and a check of a message's protobuf encoding
//! against its type that refuses exactly what prost's decoder refuses (malformed varints, keys and
//! lengths, a wire type that does not fit a known field, a string that is not UTF-8, a stray
//! end-group, nesting deeper than prost's recursion limit), without decoding anything.

use std::collections::HashMap;

use prost::Message as _;
use prost_types::{FileDescriptorSet, field_descriptor_proto::Label, field_descriptor_proto::Type};

/// prost's default recursion limit for nested messages and groups.
const RECURSION_LIMIT: u32 = 100;

/// The request types of the methods of every service in some descriptor sets.
#[derive(Debug, Default)]
pub struct Schemas {
    messages: Vec<MessageSchema>,
    /// `/package.Service/Method` to the index of its request type in `messages`.
    methods: HashMap<String, usize>,
}

/// One message type: what each known field number must look like on the wire.
#[derive(Debug, Default)]
struct MessageSchema {
    fields: HashMap<u32, Field>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// A number on the wire as `wire_type` (0 varint, 1 fixed 64-bit, 5 fixed 32-bit); a repeated
    /// one may also come packed (length-delimited).
    Scalar {
        wire_type: u8,
        repeated: bool,
    },
    String,
    Bytes,
    /// A message of the type at this index, or of a type no descriptor set describes (only its
    /// length is checked).
    Message(Option<usize>),
    Group,
}

/// Why a message was refused, for the client's INVALID_ARGUMENT.
pub type Malformed = String;

impl Schemas {
    /// Reads the message types and service methods of encoded `FileDescriptorSet`s. Sets that do
    /// not decode are skipped: their methods' messages are then not checked (tonic still decodes
    /// them).
    pub fn from_descriptor_sets(encoded_sets: &[&[u8]]) -> Self {
        let files: Vec<_> = encoded_sets
            .iter()
            .filter_map(|encoded| FileDescriptorSet::decode(*encoded).ok())
            .flat_map(|set| set.file)
            .collect();
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut types = Vec::new();
        for file in &files {
            let prefix = match file.package() {
                "" => String::new(),
                package => format!(".{package}"),
            };
            for message in &file.message_type {
                collect_types(&prefix, message, &mut names, &mut types);
            }
        }
        let messages = types
            .iter()
            .map(|message| MessageSchema {
                fields: message
                    .field
                    .iter()
                    .filter_map(|field| {
                        Some((u32::try_from(field.number()).ok()?, field_of(field, &names)))
                    })
                    .collect(),
            })
            .collect();
        let mut methods = HashMap::new();
        for file in &files {
            let package = file.package();
            for service in &file.service {
                for method in &service.method {
                    if let Some(&index) = names.get(method.input_type()) {
                        let service_name = match package {
                            "" => service.name().to_owned(),
                            package => format!("{package}.{}", service.name()),
                        };
                        methods.insert(format!("/{service_name}/{}", method.name()), index);
                    }
                }
            }
        }
        Self { messages, methods }
    }

    /// The request type of the method at `path`, if known.
    pub fn request_type(&self, path: &str) -> Option<usize> {
        self.methods.get(path).copied()
    }

    /// Checks `bytes` as an encoding of the message type `index`.
    ///
    /// # Errors
    /// What prost would refuse, described for the client.
    pub fn check(&self, index: usize, bytes: &[u8]) -> Result<(), Malformed> {
        let mut buf = bytes;
        self.check_message(Some(index), &mut buf, 0)
    }

    fn check_message(
        &self,
        index: Option<usize>,
        buf: &mut &[u8],
        depth: u32,
    ) -> Result<(), Malformed> {
        let schema = index.and_then(|index| self.messages.get(index));
        while !buf.is_empty() {
            let (tag, wire_type) = key(buf)?;
            let field = schema.and_then(|schema| schema.fields.get(&tag)).copied();
            match field {
                None => skip(tag, wire_type, buf, depth)?,
                Some(Field::String) => {
                    let value = delimited(tag, wire_type, buf)?;
                    if std::str::from_utf8(value).is_err() {
                        return Err(format!("field {tag} is a string that is not valid UTF-8"));
                    }
                }
                Some(Field::Bytes) => {
                    delimited(tag, wire_type, buf)?;
                }
                Some(Field::Message(nested)) => {
                    let mut value = delimited(tag, wire_type, buf)?;
                    if depth + 1 >= RECURSION_LIMIT {
                        return Err("messages are nested too deeply".to_owned());
                    }
                    if nested.is_some() {
                        self.check_message(nested, &mut value, depth + 1)?;
                    }
                }
                Some(Field::Group) if wire_type == 3 => skip(tag, wire_type, buf, depth)?,
                Some(Field::Group) => return Err(wrong_wire_type(tag, wire_type)),
                Some(Field::Scalar {
                    wire_type: expected,
                    repeated,
                }) => {
                    if wire_type == expected {
                        scalar(expected, buf)?;
                    } else if repeated && wire_type == 2 {
                        let mut packed = delimited(tag, wire_type, buf)?;
                        while !packed.is_empty() {
                            scalar(expected, &mut packed)?;
                        }
                    } else {
                        return Err(wrong_wire_type(tag, wire_type));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Numbers every message type (nested ones too) by its full name, `.package.Outer.Inner`.
fn collect_types<'a>(
    prefix: &str,
    message: &'a prost_types::DescriptorProto,
    names: &mut HashMap<String, usize>,
    types: &mut Vec<&'a prost_types::DescriptorProto>,
) {
    let name = format!("{prefix}.{}", message.name());
    for nested in &message.nested_type {
        collect_types(&name, nested, names, types);
    }
    names.insert(name, types.len());
    types.push(message);
}

fn field_of(field: &prost_types::FieldDescriptorProto, names: &HashMap<String, usize>) -> Field {
    let repeated = field.label() == Label::Repeated;
    let scalar = |wire_type| Field::Scalar {
        wire_type,
        repeated,
    };
    match field.r#type() {
        Type::Double | Type::Fixed64 | Type::Sfixed64 => scalar(1),
        Type::Float | Type::Fixed32 | Type::Sfixed32 => scalar(5),
        Type::Int64
        | Type::Uint64
        | Type::Int32
        | Type::Bool
        | Type::Uint32
        | Type::Enum
        | Type::Sint32
        | Type::Sint64 => scalar(0),
        Type::String => Field::String,
        Type::Bytes => Field::Bytes,
        Type::Message => Field::Message(names.get(field.type_name()).copied()),
        Type::Group => Field::Group,
    }
}

fn wrong_wire_type(tag: u32, wire_type: u8) -> Malformed {
    format!("field {tag} has the wrong wire type ({wire_type})")
}

fn varint(buf: &mut &[u8]) -> Result<u64, Malformed> {
    let mut value = 0_u64;
    for index in 0..10 {
        let Some((&byte, rest)) = buf.split_first() else {
            return Err("a varint is cut off".to_owned());
        };
        *buf = rest;
        // The tenth byte may only hold the 64th bit.
        if index == 9 && byte > 1 {
            return Err("a varint is longer than 64 bits".to_owned());
        }
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte < 0x80 {
            return Ok(value);
        }
    }
    Err("a varint is longer than 64 bits".to_owned())
}

fn key(buf: &mut &[u8]) -> Result<(u32, u8), Malformed> {
    let key = varint(buf)?;
    let key = u32::try_from(key).map_err(|_| format!("invalid field key {key}"))?;
    let wire_type = (key & 7) as u8;
    if wire_type > 5 {
        return Err(format!("invalid wire type {wire_type}"));
    }
    let tag = key >> 3;
    if tag == 0 {
        return Err("invalid field number 0".to_owned());
    }
    Ok((tag, wire_type))
}

fn take<'a>(buf: &mut &'a [u8], length: u64) -> Result<&'a [u8], Malformed> {
    let length = usize::try_from(length).unwrap_or(usize::MAX);
    if length > buf.len() {
        return Err("a length-delimited field runs past the end of the message".to_owned());
    }
    let (value, rest) = buf.split_at(length);
    *buf = rest;
    Ok(value)
}

fn delimited<'a>(tag: u32, wire_type: u8, buf: &mut &'a [u8]) -> Result<&'a [u8], Malformed> {
    if wire_type != 2 {
        return Err(wrong_wire_type(tag, wire_type));
    }
    let length = varint(buf)?;
    take(buf, length)
}

fn scalar(wire_type: u8, buf: &mut &[u8]) -> Result<(), Malformed> {
    match wire_type {
        0 => varint(buf).map(drop),
        1 => take(buf, 8).map(drop),
        _ => take(buf, 4).map(drop),
    }
}

/// Skips a field the schema does not know, as prost does (groups included).
fn skip(tag: u32, wire_type: u8, buf: &mut &[u8], depth: u32) -> Result<(), Malformed> {
    match wire_type {
        0 | 1 | 5 => scalar(wire_type, buf),
        2 => {
            let length = varint(buf)?;
            take(buf, length).map(drop)
        }
        3 => {
            if depth + 1 >= RECURSION_LIMIT {
                return Err("groups are nested too deeply".to_owned());
            }
            loop {
                if buf.is_empty() {
                    return Err("a group is not closed".to_owned());
                }
                let (inner_tag, inner_wire_type) = key(buf)?;
                if inner_wire_type == 4 {
                    if inner_tag != tag {
                        return Err("an end-group tag does not match its group".to_owned());
                    }
                    return Ok(());
                }
                skip(inner_tag, inner_wire_type, buf, depth + 1)?;
            }
        }
        _ => Err("an end-group tag without a group".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn schemas() -> Schemas {
        Schemas::from_descriptor_sets(&[
            proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ])
    }

    /// What prost says about `bytes` as a `T`, and what the check says.
    fn both<T: Message + Default>(schemas: &Schemas, path: &str, bytes: &[u8]) -> (bool, bool) {
        let index = schemas.request_type(path).expect("known method");
        (
            T::decode(bytes).is_ok(),
            schemas.check(index, bytes).is_ok(),
        )
    }

    #[test]
    fn the_check_refuses_exactly_what_prost_refuses() {
        use proto::chat::v1 as pb;
        let schemas = schemas();
        let send = "/chat.v1.ChatService/SendMessage";
        let valid = pb::SendMessageRequest {
            envelope: Some(pb::Envelope {
                conversation_id: "c".into(),
                ciphertext: vec![1, 2, 3],
                wrapped_keys: vec![pb::WrappedKey {
                    device_id: "d".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
        .encode_to_vec();
        let mut bad_utf8 = valid.clone();
        let at = bad_utf8.iter().position(|&byte| byte == b'c').unwrap();
        bad_utf8[at] = 0xff;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("valid", valid.clone()),
            ("empty", vec![]),
            ("ffffff", vec![0xff, 0xff, 0xff]),
            ("string with invalid UTF-8", bad_utf8),
            ("truncated", valid[..valid.len() - 1].to_vec()),
            ("field number 0", vec![0x00, 0x01]),
            ("wire type 7", vec![0x0f]),
            ("message field as varint", vec![0x08, 0x01]),
            ("unknown varint field", vec![0x98, 0x06, 0x01]),
            ("unknown group", vec![0xfb, 0x01, 0xfc, 0x01]),
            ("unclosed group", vec![0xfb, 0x01]),
            ("stray end group", vec![0xfc, 0x01]),
            (
                "eleven-byte varint",
                vec![
                    0x98, 0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ],
            ),
        ];

        for (name, bytes) in cases {
            let (prost, check) = both::<pb::SendMessageRequest>(&schemas, send, &bytes);
            assert_eq!(
                prost, check,
                "{name}: prost ok = {prost}, check ok = {check}"
            );
        }
    }

    #[test]
    fn repeated_numbers_may_come_packed_or_not_and_a_health_request_is_known() {
        use proto::chat::v1 as pb;
        let schemas = schemas();
        // ListMessagesRequest has only singular fields; a packed encoding of one is refused.
        let list = "/chat.v1.ChatService/ListMessages";
        let packed_singular = [0x12, 0x01, 0x01];
        let (prost, check) = both::<pb::ListMessagesRequest>(&schemas, list, &packed_singular);
        assert_eq!(prost, check);

        let health = "/grpc.health.v1.Health/Check";
        let (prost, check) =
            both::<tonic_health::pb::HealthCheckRequest>(&schemas, health, &[0x0a, 0x01, 0xc0]);
        assert_eq!((prost, check), (false, false), "a non-UTF-8 service name");
    }

    #[test]
    fn the_check_agrees_with_prost_on_many_mutated_and_random_messages() {
        use proto::chat::v1 as pb;
        let schemas = schemas();
        let send = "/chat.v1.ChatService/SendMessage";
        let valid = pb::SendMessageRequest {
            envelope: Some(pb::Envelope {
                suite: 1,
                conversation_id: "conversation".into(),
                sender_user_id: "user".into(),
                client_message_id: "m1".into(),
                nonce: vec![9; 12],
                ciphertext: vec![1, 2, 3, 4],
                wrapped_keys: (0..3)
                    .map(|index| pb::WrappedKey {
                        device_id: format!("device-{index}"),
                        key_fingerprint: vec![index; 4],
                        wrapped_key: vec![5; 8],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
        }
        .encode_to_vec();
        // xorshift: deterministic, no dependency.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut disagreements = Vec::new();
        for round in 0..20_000 {
            let bytes = if round % 2 == 0 {
                let mut mutated = valid.clone();
                for _ in 0..1 + next() % 3 {
                    let at = (next() as usize) % mutated.len();
                    mutated[at] = next() as u8;
                }
                mutated.truncate(mutated.len() - (next() as usize % 3));
                mutated
            } else {
                (0..next() % 24).map(|_| next() as u8).collect()
            };
            let (prost, check) = both::<pb::SendMessageRequest>(&schemas, send, &bytes);
            if prost != check {
                disagreements.push((bytes, prost, check));
            }
        }

        assert!(
            disagreements.is_empty(),
            "{:02x?}",
            &disagreements[..disagreements.len().min(3)]
        );
    }
}
