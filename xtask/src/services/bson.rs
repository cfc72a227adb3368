//! Just enough BSON to talk to a MongoDB server: build small command documents and read replies.
//!
//! The xtask speaks the wire protocol itself (see [`super::mongo`]) so that it needs no driver.
//! Encoding covers the field types commands use (strings, integers, booleans, documents);
//! decoding understands every type a server sends back to `hello` or `listCollections`, and
//! keeps unfamiliar ones as [`Value::Other`] so a reply never fails to parse for that reason.

/// One BSON value, as far as the xtask cares.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Double(f64),
    String(String),
    Document(Document),
    Array(Vec<Value>),
    Bool(bool),
    Int32(i32),
    Int64(i64),
    Null,
    /// Any other type (binary, object id, dates, ...): its type byte, contents skipped.
    Other(u8),
}

impl Value {
    /// The value as a number, if it is one (commands answer `ok` as a double or an integer).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Double(v) => Some(v),
            Value::Int32(v) => Some(f64::from(v)),
            Value::Int64(v) => Some(v as f64),
            _ => None,
        }
    }
}

/// An ordered BSON document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Document(pub Vec<(String, Value)>);

impl Document {
    /// Appends a field (builder style).
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.0.push((key.to_owned(), value));
        self
    }

    /// The first field named `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The field `key` if it is a document.
    pub fn document(&self, key: &str) -> Option<&Document> {
        match self.get(key) {
            Some(Value::Document(d)) => Some(d),
            _ => None,
        }
    }

    /// Encodes the document.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0; 4];
        for (key, value) in &self.0 {
            encode_element(&mut out, key, value);
        }
        out.push(0);
        let len = i32::try_from(out.len()).expect("command documents are small");
        out[..4].copy_from_slice(&len.to_le_bytes());
        out
    }

    /// Decodes one document from the start of `bytes`; returns it and the bytes it used.
    pub fn decode(bytes: &[u8]) -> Result<(Document, usize), String> {
        let mut reader = Reader { bytes, pos: 0 };
        let doc = reader.document()?;
        Ok((doc, reader.pos))
    }
}

fn encode_element(out: &mut Vec<u8>, key: &str, value: &Value) {
    let (tag, body): (u8, Vec<u8>) = match value {
        Value::Double(v) => (0x01, v.to_le_bytes().to_vec()),
        Value::String(s) => {
            let mut b = i32::try_from(s.len() + 1)
                .expect("command strings are small")
                .to_le_bytes()
                .to_vec();
            b.extend_from_slice(s.as_bytes());
            b.push(0);
            (0x02, b)
        }
        Value::Document(d) => (0x03, d.encode()),
        Value::Array(items) => {
            let doc = Document(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i.to_string(), v.clone()))
                    .collect(),
            );
            (0x04, doc.encode())
        }
        Value::Bool(b) => (0x08, vec![u8::from(*b)]),
        Value::Null => (0x0A, Vec::new()),
        Value::Int32(v) => (0x10, v.to_le_bytes().to_vec()),
        Value::Int64(v) => (0x12, v.to_le_bytes().to_vec()),
        Value::Other(tag) => panic!("cannot encode BSON type {tag:#x}: only decoded, never built"),
    };
    out.push(tag);
    out.extend_from_slice(key.as_bytes());
    out.push(0);
    out.extend_from_slice(&body);
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("BSON truncated at byte {}", self.pos))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }

    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    fn length(&mut self) -> Result<usize, String> {
        let len = self.i32()?;
        usize::try_from(len).map_err(|_| format!("negative BSON length {len}"))
    }

    fn cstring(&mut self) -> Result<String, String> {
        let rest = &self.bytes[self.pos..];
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or("BSON key without terminator")?;
        let s = String::from_utf8_lossy(&rest[..nul]).into_owned();
        self.pos += nul + 1;
        Ok(s)
    }

    fn document(&mut self) -> Result<Document, String> {
        let start = self.pos;
        let len = self.length()?;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= self.bytes.len() && len >= 5)
            .ok_or_else(|| format!("BSON document length {len} does not fit"))?;
        let mut fields = Vec::new();
        while self.pos < end - 1 {
            let tag = self.take(1)?[0];
            let key = self.cstring()?;
            let value = self.value(tag)?;
            fields.push((key, value));
        }
        if self.take(1)? != [0] {
            return Err("BSON document does not end with a zero byte".into());
        }
        Ok(Document(fields))
    }

    fn value(&mut self, tag: u8) -> Result<Value, String> {
        Ok(match tag {
            0x01 => Value::Double(f64::from_le_bytes(self.array()?)),
            0x02 | 0x0D | 0x0E => {
                let len = self.length()?;
                let bytes = self.take(len)?;
                let text = bytes.strip_suffix(&[0]).unwrap_or(bytes);
                let text = String::from_utf8_lossy(text).into_owned();
                if tag == 0x02 {
                    Value::String(text)
                } else {
                    Value::Other(tag)
                }
            }
            0x03 => Value::Document(self.document()?),
            0x04 => Value::Array(self.document()?.0.into_iter().map(|(_, v)| v).collect()),
            0x05 => {
                let len = self.length()?;
                self.take(len + 1)?;
                Value::Other(tag)
            }
            0x06 | 0x0A | 0x7F | 0xFF => {
                if tag == 0x0A {
                    Value::Null
                } else {
                    Value::Other(tag)
                }
            }
            0x07 => {
                self.take(12)?;
                Value::Other(tag)
            }
            0x08 => Value::Bool(self.take(1)?[0] != 0),
            0x09 | 0x11 => {
                self.take(8)?;
                Value::Other(tag)
            }
            0x0B => {
                self.cstring()?;
                self.cstring()?;
                Value::Other(tag)
            }
            0x0C => {
                let len = self.length()?;
                self.take(len + 12)?;
                Value::Other(tag)
            }
            0x0F => {
                let start = self.pos;
                let len = self.length()?;
                self.pos = start;
                self.take(len)?;
                Value::Other(tag)
            }
            0x10 => Value::Int32(self.i32()?),
            0x12 => Value::Int64(i64::from_le_bytes(self.array()?)),
            0x13 => {
                self.take(16)?;
                Value::Other(tag)
            }
            other => return Err(format!("unknown BSON type {other:#x}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_document_round_trips() {
        let doc = Document::default()
            .with("listCollections", Value::Int32(1))
            .with("nameOnly", Value::Bool(true))
            .with("$db", Value::String("test".into()))
            .with(
                "filter",
                Value::Document(Document::default().with("x", Value::Int64(-7))),
            )
            .with(
                "names",
                Value::Array(vec![Value::String("a".into()), Value::Null]),
            )
            .with("ok", Value::Double(1.0));
        let bytes = doc.encode();
        let (back, used) = Document::decode(&bytes).expect("decodes");
        assert_eq!(used, bytes.len());
        assert_eq!(back, doc);
    }

    #[test]
    fn the_encoding_matches_the_bson_specification() {
        // {"hello": "world"} from the BSON specification's examples.
        let doc = Document::default().with("hello", Value::String("world".into()));
        assert_eq!(
            doc.encode(),
            b"\x16\x00\x00\x00\x02hello\x00\x06\x00\x00\x00world\x00\x00".to_vec()
        );
    }

    #[test]
    fn truncated_or_lying_input_is_an_error_not_a_panic() {
        let bytes = Document::default().with("a", Value::Int32(1)).encode();
        for cut in 0..bytes.len() {
            assert!(Document::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(Document::decode(b"\xff\xff\xff\x7f\x00").is_err());
    }
}
