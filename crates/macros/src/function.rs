//! What the attribute needs to know about the function it is on, and the misuse it refuses.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    FnArg, GenericParam, Ident, ItemFn, Pat, PatIdent, ReturnType, Signature, Type, TypeReference,
};

use crate::args::Args;

/// The function, read.
pub struct Analysis {
    /// The name, without `r#`.
    pub name: String,
    pub is_async: bool,
    pub receiver: Option<Receiver>,
    pub params: Vec<Param>,
    pub output: Type,
    /// `Result<T, E>` (by the last segment of its path, so aliases such as `io::Result<T>`
    /// count): errors are not cached, and a strict cache's errors may come back as `E`.
    pub fallible: bool,
    /// A method or an associated function that names `Self`: its id starts with the `Self`
    /// type's name, and its handles are kept per `Self` type.
    pub in_impl: bool,
    /// The type parameters, in order: they go into the id.
    pub type_params: Vec<Ident>,
}

/// A `self` receiver.
pub struct Receiver {
    pub span: Span,
    /// `&self` or `&mut self` (or `self: &Self`).
    pub by_ref: bool,
    pub mutable: bool,
}

/// One argument other than `self`.
pub struct Param {
    /// Its name in the generated signature: the user's for a plain `name: T` (or `mut name`),
    /// else `__cachier_arg{i}`.
    pub outer: Ident,
    /// The user's pattern, bound again from `outer` where the body runs.
    pub pat: Pat,
    pub ty: Type,
    /// `&T` / `&mut T`: whether mutable, and `T`.
    pub reference: Option<(bool, Type)>,
    /// The name `ignore(...)` knows it by (plain patterns only).
    pub name: Option<Ident>,
    /// Part of the key (not ignored, no `key = ...`).
    pub in_key: bool,
}

pub fn analyze(item: &ItemFn, args: &Args) -> syn::Result<Analysis> {
    let sig = &item.sig;
    refuse_unsupported(sig)?;
    let name = sig.ident.unraw().to_string();

    let mut receiver = None;
    let mut params = Vec::new();
    for (index, input) in sig.inputs.iter().enumerate() {
        match input {
            FnArg::Receiver(r) => {
                let (by_ref, mutable) = match &*r.ty {
                    Type::Reference(TypeReference { mutability, .. }) => {
                        (true, mutability.is_some())
                    }
                    _ => (false, false),
                };
                receiver = Some(Receiver {
                    span: r.self_token.span,
                    by_ref,
                    mutable,
                });
            }
            FnArg::Typed(typed) => {
                if let Some(span) = find_impl_trait(&typed.ty) {
                    return Err(syn::Error::new(
                        span,
                        "`impl Trait` arguments cannot be told apart in the function id: name a \
                         type parameter instead, e.g. `fn f<T: Trait>(x: T)`",
                    ));
                }
                let plain = match &*typed.pat {
                    Pat::Ident(PatIdent {
                        by_ref: None,
                        subpat: None,
                        ident,
                        ..
                    }) => Some(ident.clone()),
                    _ => None,
                };
                let reference = match &*typed.ty {
                    Type::Reference(r) => Some((r.mutability.is_some(), (*r.elem).clone())),
                    _ => None,
                };
                params.push(Param {
                    outer: plain
                        .clone()
                        .unwrap_or_else(|| format_ident!("__cachier_arg{}", index)),
                    pat: (*typed.pat).clone(),
                    ty: (*typed.ty).clone(),
                    reference,
                    name: plain,
                    in_key: args.key.is_none(),
                });
            }
        }
    }

    let output = match &sig.output {
        ReturnType::Default => {
            return Err(syn::Error::new(
                sig.ident.span(),
                format!(
                    "`{name}` returns nothing, so there is nothing to cache: #[cachier] stores a \
                     function's result; give it a return type"
                ),
            ));
        }
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    if let Some(span) = find_impl_trait(&output) {
        return Err(syn::Error::new(
            span,
            "a cached function returns a type the cache can store and read back: name it \
             instead of `impl Trait`",
        ));
    }
    let fallible = matches!(&output, Type::Path(p)
        if p.qself.is_none() && p.path.segments.last().is_some_and(|s| s.ident == "Result"));

    if let Some((names, _)) = &args.ignore {
        for ignored in names {
            if ignored == "self" {
                if receiver.is_none() {
                    return Err(syn::Error::new(
                        ignored.span(),
                        format!("`ignore(self)`: `{name}` takes no `self`; remove it"),
                    ));
                }
                continue;
            }
            let Some(param) = params.iter_mut().find(|p| {
                p.name
                    .as_ref()
                    .is_some_and(|n| n.unraw() == ignored.unraw())
            }) else {
                let mut known: Vec<String> = receiver.iter().map(|_| "self".into()).collect();
                known.extend(
                    params
                        .iter()
                        .filter_map(|p| p.name.as_ref().map(|n| n.unraw().to_string())),
                );
                let known = if known.is_empty() {
                    "it takes none".to_string()
                } else {
                    format!("its arguments are: {}", known.join(", "))
                };
                return Err(syn::Error::new(
                    ignored.span(),
                    format!("`ignore({ignored})`: `{name}` has no argument `{ignored}`; {known}"),
                ));
            };
            param.in_key = false;
        }
    }

    if let Some(r) = &receiver {
        let ignored = args
            .ignore
            .as_ref()
            .is_some_and(|(names, _)| names.iter().any(|n| n == "self"));
        if !ignored && args.key.is_none() {
            return Err(syn::Error::new(
                r.span,
                format!(
                    "`{name}` takes `self`: say how it counts in the key. Add `ignore(self)` to \
                     leave it out (every instance shares the results), or build the key \
                     yourself with `key = ...`, e.g. `key = (self.id, arg)`"
                ),
            ));
        }
        if args.next_time.is_some() && r.mutable {
            return Err(syn::Error::new(
                r.span,
                "`next_time` refreshes in the background after the call has returned, with a \
                 copy of `self`: it cannot go with `&mut self`",
            ));
        }
    }

    for param in &params {
        let Some((true, _)) = &param.reference else {
            continue;
        };
        if args.next_time.is_some() {
            return Err(syn::Error::new(
                param.ty.span(),
                "`next_time` refreshes in the background after the call has returned, with \
                 copies of the arguments: it cannot go with an argument taken by `&mut`",
            ));
        }
        if param.in_key {
            let shown = param
                .name
                .as_ref()
                .map_or_else(|| "name".to_string(), |n| n.unraw().to_string());
            return Err(syn::Error::new(
                param.ty.span(),
                format!(
                    "an argument taken by `&mut` cannot be part of the key: what the function \
                     does to it is skipped on a hit. Leave it out with `ignore({shown})` if \
                     that is right, or take it by `&`"
                ),
            ));
        }
    }

    let mut type_params = Vec::new();
    for param in &sig.generics.params {
        match param {
            GenericParam::Type(t) => type_params.push(t.ident.clone()),
            GenericParam::Lifetime(_) => {}
            GenericParam::Const(c) => {
                return Err(syn::Error::new(
                    c.const_token.span,
                    "#[cachier] does not take const generic parameters: their values would \
                     have to go into the function id; write one function per value, or pass \
                     the value as an argument",
                ));
            }
        }
    }

    let in_impl = receiver.is_some()
        || names_self(sig.to_token_stream())
        || names_self(item.block.to_token_stream());

    Ok(Analysis {
        name,
        is_async: sig.asyncness.is_some(),
        receiver,
        params,
        output,
        fallible,
        in_impl,
        type_params,
    })
}

fn refuse_unsupported(sig: &Signature) -> syn::Result<()> {
    let refuse = |span: Span, what: &str| {
        Err(syn::Error::new(
            span,
            format!(
                "#[cachier] does not take {what}: cache a plain `fn` or `async fn` that calls it"
            ),
        ))
    };
    if let Some(t) = &sig.constness {
        return refuse(t.span, "a `const fn`");
    }
    if let Some(t) = &sig.unsafety {
        return refuse(t.span, "an `unsafe fn`");
    }
    if let Some(abi) = &sig.abi {
        return refuse(abi.extern_token.span, "an `extern` function");
    }
    if let Some(v) = &sig.variadic {
        return refuse(v.dots.spans[0], "a variadic function");
    }
    Ok(())
}

/// The span of an `impl Trait` anywhere in a type.
fn find_impl_trait(ty: &Type) -> Option<Span> {
    fn find(tokens: TokenStream) -> Option<Span> {
        for token in tokens {
            match token {
                TokenTree::Ident(ident) if ident == "impl" => return Some(ident.span()),
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
    find(ty.to_token_stream())
}

/// Whether the tokens name `Self` anywhere.
fn names_self(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|token| match token {
        TokenTree::Ident(ident) => ident == "Self",
        TokenTree::Group(group) => names_self(group.stream()),
        _ => false,
    })
}
