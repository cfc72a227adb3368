//! `hash_body`: a hash of the function's tokens, so changed code misses old entries.
//!
//! The hash covers the tokens, not the text: whitespace and comments never reach a token stream,
//! and doc comments (which do, as `#[doc = "..."]` attributes) are skipped, as is the spacing
//! between punctuation (`a+b` and `a + b` hash alike). Each token is written with its kind and
//! text (`i:name`, `p:+`, `l:1_000`, groups with their delimiters) and the whole is hashed with
//! 64-bit FNV-1a, written as 16 lowercase hex digits. The format is part of the function id:
//! changing it misses every entry stored under `hash_body`, so it is pinned by a snapshot test.

use proc_macro2::{Delimiter, TokenStream, TokenTree};

/// The hash of `parts` (the signature, the body, the key-forming arguments), as 16 hex digits.
pub fn hash_tokens(parts: &[TokenStream]) -> String {
    let mut hasher = Fnv1a::new();
    for part in parts {
        write_stream(&mut hasher, part.clone());
        hasher.write(b"|");
    }
    format!("{:016x}", hasher.finish())
}

fn write_stream(hasher: &mut Fnv1a, stream: TokenStream) {
    let tokens: Vec<TokenTree> = stream.into_iter().collect();
    let mut i = 0;
    while i < tokens.len() {
        if let Some(skip) = doc_attribute_len(&tokens[i..]) {
            i += skip;
            continue;
        }
        match &tokens[i] {
            TokenTree::Ident(ident) => {
                hasher.write(b"i:");
                hasher.write(ident.to_string().as_bytes());
            }
            TokenTree::Punct(punct) => {
                hasher.write(b"p:");
                let mut buf = [0u8; 4];
                hasher.write(punct.as_char().encode_utf8(&mut buf).as_bytes());
            }
            TokenTree::Literal(literal) => {
                hasher.write(b"l:");
                hasher.write(literal.to_string().as_bytes());
            }
            TokenTree::Group(group) => {
                let (open, close): (&[u8], &[u8]) = match group.delimiter() {
                    Delimiter::Parenthesis => (b"(", b")"),
                    Delimiter::Brace => (b"{", b"}"),
                    Delimiter::Bracket => (b"[", b"]"),
                    Delimiter::None => (b"<", b">"),
                };
                hasher.write(open);
                write_stream(hasher, group.stream());
                hasher.write(close);
            }
        }
        hasher.write(b" ");
        i += 1;
    }
}

/// The number of tokens of a doc attribute starting at `tokens[0]`: `# [doc ...]` or
/// `# ! [doc ...]`.
fn doc_attribute_len(tokens: &[TokenTree]) -> Option<usize> {
    let TokenTree::Punct(hash) = tokens.first()? else {
        return None;
    };
    if hash.as_char() != '#' {
        return None;
    }
    let (bang, group) = match tokens.get(1)? {
        TokenTree::Punct(p) if p.as_char() == '!' => (1, tokens.get(2)?),
        other => (0, other),
    };
    let TokenTree::Group(group) = group else {
        return None;
    };
    if group.delimiter() != Delimiter::Bracket {
        return None;
    }
    match group.stream().into_iter().next() {
        Some(TokenTree::Ident(ident)) if ident == "doc" => Some(2 + bang),
        _ => None,
    }
}

/// 64-bit FNV-1a: small, stable across Rust releases and platforms (unlike `DefaultHasher`).
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn hash(tokens: TokenStream) -> String {
        hash_tokens(&[tokens])
    }

    #[test]
    fn whitespace_comments_and_spacing_do_not_count() {
        let plain = hash(quote! { { let y = x + 1; y * 2 } });
        let spaced: TokenStream = "{\n  // a comment\n  let y=x+1 ; /* another */ y*2\n}"
            .parse()
            .unwrap();
        assert_eq!(hash(spaced), plain);
        let documented: TokenStream = "{ /// a doc comment\n let y = x + 1; y * 2 }"
            .parse()
            .unwrap();
        assert_eq!(hash(documented), plain);
    }

    #[test]
    fn any_token_counts() {
        let base = hash(quote! { { x + 1 } });
        assert_ne!(hash(quote! { { x + 2 } }), base);
        assert_ne!(hash(quote! { { x - 1 } }), base);
        assert_ne!(hash(quote! { { y + 1 } }), base);
        assert_ne!(hash(quote! { { (x + 1) } }), base);
        assert_ne!(hash(quote! { { x + "1" } }), base);
    }

    #[test]
    fn fnv1a_matches_its_reference_values() {
        let of = |text: &str| {
            let mut h = Fnv1a::new();
            h.write(text.as_bytes());
            h.finish()
        };
        assert_eq!(of(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(of("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(of("foobar"), 0x8594_4171_f739_67e8);
    }
}
