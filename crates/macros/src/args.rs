//! The attribute's arguments: `#[cachier(cache = CACHE, stale_after = "1h", ignore(a), ...)]`.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Ident, Lit, LitStr, Token};

use crate::human;

/// Every argument, in the order the docs list them.
pub const ARGUMENTS: &[&str] = &[
    "cache",
    "name",
    "version",
    "hash_body",
    "stale_after",
    "next_time",
    "wait_for_calc_timeout",
    "lease",
    "allow_none",
    "entry_size_limit",
    "ignore",
    "key",
];

/// The longest `name` and `version`, in bytes (a function id holds at most 256).
pub const MAX_NAME_LEN: usize = 160;
pub const MAX_VERSION_LEN: usize = 64;

/// A duration: read from a string at compile time, or any `Duration` expression.
pub enum DurationArg {
    Millis(u64),
    Expr(Expr),
}

/// A size in bytes: an integer or a string read at compile time, or any `usize` expression.
pub enum SizeArg {
    Bytes(u64),
    Expr(Expr),
}

/// The parsed arguments.
#[derive(Default)]
pub struct Args {
    pub cache: Option<Expr>,
    pub name: Option<LitStr>,
    pub version: Option<String>,
    pub hash_body: bool,
    pub stale_after: Option<DurationArg>,
    /// `Some(span)` when `next_time` is on: the span of the argument, for errors it causes.
    pub next_time: Option<Span>,
    pub wait_for_calc_timeout: Option<DurationArg>,
    pub lease: Option<DurationArg>,
    pub allow_none: Option<bool>,
    pub entry_size_limit: Option<SizeArg>,
    /// `ignore(a, b)`: the names, and the `ignore` keyword's span.
    pub ignore: Option<(Vec<Ident>, Span)>,
    pub key: Option<Expr>,
    /// The tokens of `ignore(...)` and `key = ...`, which decide what the key is made of: they
    /// count in `hash_body`.
    pub key_tokens: TokenStream,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args::default();
        let mut seen: Vec<String> = Vec::new();
        while !input.is_empty() {
            let ident = input.call(Ident::parse_any)?;
            let name = ident.to_string();
            if !ARGUMENTS.contains(&name.as_str()) {
                return Err(unknown_argument(&ident));
            }
            if seen.contains(&name) {
                return Err(syn::Error::new(
                    ident.span(),
                    format!("`{name}` is given twice; keep one"),
                ));
            }
            seen.push(name.clone());
            match name.as_str() {
                "cache" => {
                    let expr = value(input, &ident)?;
                    refuse_self(&expr)?;
                    args.cache = Some(expr);
                }
                "name" => args.name = Some(name_value(input, &ident)?),
                "version" => args.version = Some(version_value(input, &ident)?),
                "hash_body" => args.hash_body = flag(input, &ident)?,
                "stale_after" => args.stale_after = Some(duration(input, &ident)?),
                "next_time" => {
                    args.next_time = flag(input, &ident)?.then(|| ident.span());
                }
                "wait_for_calc_timeout" => {
                    args.wait_for_calc_timeout = Some(duration(input, &ident)?);
                }
                "lease" => args.lease = Some(duration(input, &ident)?),
                "allow_none" => args.allow_none = Some(flag(input, &ident)?),
                "entry_size_limit" => args.entry_size_limit = Some(size(input, &ident)?),
                "ignore" => {
                    let content;
                    if !input.peek(syn::token::Paren) {
                        return Err(syn::Error::new(
                            ident.span(),
                            "write the arguments to leave out of the key in parentheses: \
                             `ignore(a, b)` (or `ignore(self)`)",
                        ));
                    }
                    syn::parenthesized!(content in input);
                    let names = content.parse_terminated(Ident::parse_any, Token![,])?;
                    if names.is_empty() {
                        return Err(syn::Error::new(
                            ident.span(),
                            "`ignore()` names no argument: write `ignore(a, b)`, or remove it",
                        ));
                    }
                    let names: Vec<Ident> = names.into_iter().collect();
                    ident.to_tokens(&mut args.key_tokens);
                    for name in &names {
                        name.to_tokens(&mut args.key_tokens);
                    }
                    args.ignore = Some((names, ident.span()));
                }
                "key" => {
                    let expr = value(input, &ident)?;
                    ident.to_tokens(&mut args.key_tokens);
                    expr.to_tokens(&mut args.key_tokens);
                    args.key = Some(expr);
                }
                _ => unreachable!("every name of ARGUMENTS is matched"),
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        if let (Some((_, ignore)), Some(_)) = (&args.ignore, &args.key) {
            return Err(syn::Error::new(
                *ignore,
                "`ignore(...)` has no effect with `key = ...`: the key expression alone makes \
                 the key; remove `ignore(...)`",
            ));
        }
        Ok(args)
    }
}

fn unknown_argument(ident: &Ident) -> syn::Error {
    let name = ident.to_string();
    // An argument the word begins (`stale` → `stale_after`), else the nearest by spelling.
    let nearest = ARGUMENTS
        .iter()
        .map(|known| {
            let prefix = known.starts_with(&name) || name.starts_with(known);
            (!prefix, edit_distance(&name, known), *known)
        })
        .min()
        .filter(|(not_prefix, distance, _)| !not_prefix || *distance <= 3)
        .map(|(_, distance, known)| (distance, known));
    let mut message = format!("unknown argument `{name}`");
    if let Some((_, known)) = nearest {
        message.push_str(&format!("; did you mean `{known}`?"));
    }
    message.push_str(&format!(
        " #[cachier] takes: {}",
        ARGUMENTS
            .iter()
            .map(|a| match *a {
                "ignore" => "ignore(...)".to_string(),
                "hash_body" => "hash_body".to_string(),
                "next_time" | "allow_none" => format!("{a} [= true|false]"),
                _ => format!("{a} = ..."),
            })
            .collect::<Vec<_>>()
            .join(", ")
    ));
    syn::Error::new(ident.span(), message)
}

/// The number of single-character edits between two words.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// `= expr` after an argument's name.
fn value(input: ParseStream<'_>, ident: &Ident) -> syn::Result<Expr> {
    if !input.peek(Token![=]) {
        return Err(syn::Error::new(
            ident.span(),
            format!("`{ident}` needs a value: `{ident} = ...`"),
        ));
    }
    input.parse::<Token![=]>()?;
    input.parse()
}

/// A flag: `next_time`, or `next_time = true` / `false`.
fn flag(input: ParseStream<'_>, ident: &Ident) -> syn::Result<bool> {
    if !input.peek(Token![=]) {
        return Ok(true);
    }
    input.parse::<Token![=]>()?;
    match input.parse::<Expr>()? {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(b), ..
        }) => Ok(b.value),
        other => Err(syn::Error::new(
            other.span(),
            format!("`{ident}` is a flag: write `{ident}`, `{ident} = true` or `{ident} = false`"),
        )),
    }
}

fn duration(input: ParseStream<'_>, ident: &Ident) -> syn::Result<DurationArg> {
    match value(input, ident)? {
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) => human::parse_duration(&text.value())
            .map(DurationArg::Millis)
            .ok_or_else(|| {
                syn::Error::new(
                    text.span(),
                    format!(
                        "invalid duration {:?} for `{ident}`: {}",
                        text.value(),
                        human::DURATION_HELP
                    ),
                )
            }),
        Expr::Lit(ExprLit { lit, .. }) => Err(syn::Error::new(
            lit.span(),
            format!(
                "`{ident}` takes a duration with a unit: a string such as \"90s\" or \"1h\", \
                 or a `std::time::Duration` expression"
            ),
        )),
        expr => Ok(DurationArg::Expr(expr)),
    }
}

fn size(input: ParseStream<'_>, ident: &Ident) -> syn::Result<SizeArg> {
    let bad = |span: Span, text: &str| {
        syn::Error::new(
            span,
            format!("invalid size {text:?} for `{ident}`: {}", human::SIZE_HELP),
        )
    };
    match value(input, ident)? {
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) => human::parse_size(&text.value())
            .map(SizeArg::Bytes)
            .ok_or_else(|| bad(text.span(), &text.value())),
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => int
            .base10_parse::<u64>()
            .map(SizeArg::Bytes)
            .map_err(|_| bad(int.span(), &int.to_string())),
        Expr::Lit(ExprLit { lit, .. }) => Err(bad(lit.span(), &lit.to_token_stream().to_string())),
        expr => Ok(SizeArg::Expr(expr)),
    }
}

fn name_value(input: ParseStream<'_>, ident: &Ident) -> syn::Result<LitStr> {
    match value(input, ident)? {
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) => {
            let name = text.value();
            if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
                return Err(syn::Error::new(
                    text.span(),
                    format!(
                        "`name` must be 1 to {MAX_NAME_LEN} bytes of text without control \
                         characters, e.g. `name = \"billing::invoice_total\"`"
                    ),
                ));
            }
            Ok(text)
        }
        other => Err(syn::Error::new(
            other.span(),
            "`name` takes a string: the function id, e.g. `name = \"billing::invoice_total\"`",
        )),
    }
}

fn version_value(input: ParseStream<'_>, ident: &Ident) -> syn::Result<String> {
    let (text, span) = match value(input, ident)? {
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) => (text.value(), text.span()),
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => (int.base10_digits().to_string(), int.span()),
        other => {
            return Err(syn::Error::new(
                other.span(),
                "`version` takes a string or a number, e.g. `version = 2` or `version = \"2024-06\"`",
            ));
        }
    };
    if text.is_empty() || text.len() > MAX_VERSION_LEN || text.chars().any(char::is_control) {
        return Err(syn::Error::new(
            span,
            format!(
                "`version` must be 1 to {MAX_VERSION_LEN} bytes of text without control \
                 characters, e.g. `version = 2`"
            ),
        ));
    }
    Ok(text)
}

/// `cache = ...` is evaluated once per function, where there is no `self`.
fn refuse_self(expr: &Expr) -> syn::Result<()> {
    use proc_macro2::TokenTree;
    fn find(tokens: TokenStream) -> Option<Span> {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        for (i, token) in tokens.iter().enumerate() {
            match token {
                // `self` the value, not `self::` the module.
                TokenTree::Ident(ident)
                    if ident == "self"
                        && !matches!(tokens.get(i + 1), Some(TokenTree::Punct(p)) if p.as_char() == ':') =>
                {
                    return Some(ident.span());
                }
                TokenTree::Group(group) => {
                    if let Some(span) = find(group.stream()) {
                        return Some(span);
                    }
                }
                _ => {}
            }
        }
        None
    }
    match find(expr.to_token_stream()) {
        Some(span) => Err(syn::Error::new(
            span,
            "`cache` is evaluated once for the function, outside any call, so it cannot use \
             `self`: name a static, e.g. `cache = CACHE` with \
             `static CACHE: LazyLock<Cachier> = ...`",
        )),
        None => Ok(()),
    }
}
