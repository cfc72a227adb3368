//! The code the attribute writes: the function with the same signature, its companion, and (for
//! a method under `next_time`) the original body as a hidden sibling method.
//!
//! For `#[cachier(cache = CACHE)] async fn rate(currency: &str) -> Result<f64, E> { body }`:
//!
//! ```text
//! async fn rate(currency: &str) -> Result<f64, E> {
//!     let __cachier_handle: &'static Function = { static handle, made once from CACHE };
//!     let __cachier_key = {                 // borrows the arguments, then the borrow ends
//!         fn __cachier_key<P0: KeyPart + ?Sized>(handle: &Function, p0: &P0) -> Result<Key> {
//!             handle.key(p0.part())         // a part that is not Serialize: one error, here
//!         }
//!         __cachier_key(__cachier_handle, &currency)
//!     };
//!     let __cachier_compute = move || async move {
//!         let currency: &str = currency;                                  // the user's pattern
//!         let __cachier_ret: Result<f64, E> = { body };  __cachier_ret
//!     };
//!     match __private::call(__cachier_handle, __cachier_key, __cachier_compute).await {
//!         Ok(result) => result,                     // the body's own Ok or Err, or a cached Ok
//!         Err(cache_error) => Err(E::from(cache_error)),   // strict only, where E: From<Error>
//!     }
//! }
//! fn rate_cache() -> &'static Function { same static handle }
//! ```
//!
//! Under `next_time` the compute step first copies the arguments (`&str` → `String`), then makes
//! a `'static` future from the copies, so the front end can run it in a background refresh.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, Ident, ItemFn, Pat, PatIdent};

use crate::args::{Args, DurationArg, SizeArg};
use crate::body_hash;
use crate::function::{self, Analysis};

/// The whole expansion; on misuse, the error and the function unchanged (so its callers do not
/// add errors of their own).
pub fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item_fn: ItemFn = match syn::parse2(item.clone()) {
        Ok(item_fn) => item_fn,
        Err(_) => {
            let err = syn::Error::new(
                Span::call_site(),
                "#[cachier] goes on a function with a body: a `fn` or an `async fn`, free or in \
                 an `impl` block",
            )
            .to_compile_error();
            return quote!(#err #item);
        }
    };
    match syn::parse2::<Args>(attr).and_then(|args| generate(&item_fn, &args)) {
        Ok(tokens) => tokens,
        Err(err) => {
            let err = err.to_compile_error();
            quote!(#err #item)
        }
    }
}

fn generate(item: &ItemFn, args: &Args) -> syn::Result<TokenStream> {
    let Some(cache) = &args.cache else {
        return Err(syn::Error::new(
            Span::call_site(),
            "#[cachier] needs `cache = ...`: the `Cachier` to keep the results in, e.g. \
             `#[cachier(cache = CACHE)]` with `static CACHE: LazyLock<Cachier> = ...`",
        ));
    };
    let f = function::analyze(item, args)?;
    let body_hash = args.hash_body.then(|| {
        let sig = &item.sig;
        let block = &item.block;
        body_hash::hash_tokens(&[quote!(#sig), quote!(#block), args.key_tokens.clone()])
    });

    let handle = handle(&f, args, cache, body_hash.as_deref());
    let key = key(&f, args);
    let detached = args.next_time.is_some();
    let compute = if detached {
        detached_compute(item, &f)
    } else {
        scoped_compute(item, &f)
    };
    let output = &f.output;
    // Errors of the front end's bounds (a result that does not serialize) point at the type.
    let call = match (f.is_async, detached) {
        (true, false) => "call",
        (true, true) => "call_detached",
        (false, false) => "call_blocking",
        (false, true) => "call_blocking_detached",
    };
    let call = Ident::new(call, output.span());
    let await_ = f.is_async.then(|| quote_spanned!(output.span()=> .await));
    let call = quote_spanned! {output.span()=>
        ::cachier_core::__private::#call(__cachier_handle, __cachier_key, __cachier_compute)
            #await_
    };
    let finish = if f.fallible {
        quote! {
            match #call {
                ::core::result::Result::Ok(__cachier_result) => __cachier_result,
                ::core::result::Result::Err(__cachier_error) => {
                    use ::cachier_core::__private::{CarryByFrom as _, CarryNot as _};
                    ::core::result::Result::Err(
                        (&&::cachier_core::__private::Carry::<
                            <#output as ::cachier_core::__private::Fallible>::Error,
                        >::new())
                            .carry(__cachier_error),
                    )
                }
            }
        }
    } else {
        quote! {
            match #call {
                ::core::result::Result::Ok(::core::result::Result::Ok(__cachier_value)) => {
                    __cachier_value
                }
                ::core::result::Result::Ok(::core::result::Result::Err(__cachier_never)) => {
                    match __cachier_never {}
                }
                ::core::result::Result::Err(__cachier_error) => {
                    ::cachier_core::__private::cache_error(__cachier_error)
                }
            }
        }
    };

    let (attrs, inner): (Vec<_>, Vec<_>) = item
        .attrs
        .iter()
        .partition(|a| matches!(a.style, syn::AttrStyle::Outer));
    let vis = &item.vis;
    let mut sig = item.sig.clone();
    let mut typed = f.params.iter();
    for input in sig.inputs.iter_mut() {
        if let FnArg::Typed(arg) = input {
            let param = typed.next().expect("one Param per typed argument");
            *arg.pat = Pat::Ident(PatIdent {
                attrs: Vec::new(),
                by_ref: None,
                mutability: None,
                ident: param.outer.clone(),
                subpat: None,
            });
        }
    }

    let cfg: Vec<_> = item
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .collect();
    let companion = format_ident!("{}_cache", f.name, span = item.sig.ident.span());
    let generics = &item.sig.generics;
    let where_clause = &generics.where_clause;
    let companion_doc = companion_doc(&f, args);
    let sibling = (detached && f.receiver.is_some()).then(|| {
        let mut sig = item.sig.clone();
        sig.ident = sibling_name(&f);
        let stmts = &item.block.stmts;
        quote! {
            #(#cfg)*
            #[doc(hidden)]
            #[allow(dead_code)]
            #sig {
                #(#inner)*
                #(#stmts)*
            }
        }
    });

    Ok(quote! {
        #(#attrs)*
        #vis #sig {
            #(#inner)*
            let __cachier_handle: &'static ::cachier_core::Function = #handle;
            let __cachier_key = #key;
            let __cachier_compute = #compute;
            #finish
        }

        #(#cfg)*
        #[doc = #companion_doc]
        #[allow(dead_code)]
        #vis fn #companion #generics () -> &'static ::cachier_core::Function #where_clause {
            #handle
        }

        #sibling
    })
}

/// The hidden method that holds a method's body under `next_time`.
fn sibling_name(f: &Analysis) -> Ident {
    format_ident!("__cachier_{}", f.name)
}

/// An expression for the function's `&'static Function`: made once (per instantiation of a
/// generic function, per `Self` type of a method) from `cache`, the id and the settings.
fn handle(f: &Analysis, args: &Args, cache: &syn::Expr, body_hash: Option<&str>) -> TokenStream {
    let name = &f.name;
    let (path, name) = match &args.name {
        Some(given) => (quote!(::core::option::Option::None), given.value()),
        None if f.in_impl => (
            quote!(::core::option::Option::Some(::std::any::type_name::<Self>())),
            name.clone(),
        ),
        None => (
            quote!(::core::option::Option::Some(::std::module_path!())),
            name.clone(),
        ),
    };
    let type_names: Vec<TokenStream> = f
        .type_params
        .iter()
        .map(|t| quote!(::std::any::type_name::<#t>()))
        .collect();
    let version = option_str(args.version.as_deref());
    let body_hash = option_str(body_hash);
    let settings = settings(f, args);
    let cache_ref = quote_spanned!(cache.span()=> &(#cache));
    let make = quote! {
        || {
            let __cachier_cache: &::cachier_core::Cachier = #cache_ref;
            let __cachier_id = ::cachier_core::__private::func_id(
                #path,
                #name,
                &[#(#type_names),*],
                #version,
                #body_hash,
            );
            __cachier_cache
                .function(__cachier_id)
                .configure(|__cachier_settings: &mut ::cachier_core::Settings| { #settings })
        }
    };
    if !f.in_impl && f.type_params.is_empty() {
        quote! {{
            static __CACHIER_HANDLE: ::std::sync::OnceLock<::cachier_core::Function> =
                ::std::sync::OnceLock::new();
            __CACHIER_HANDLE.get_or_init(#make)
        }}
    } else {
        let self_name = f.in_impl.then(|| quote!(::std::any::type_name::<Self>(),));
        quote! {{
            static __CACHIER_HANDLES: ::cachier_core::__private::Handles =
                ::cachier_core::__private::Handles::new();
            __CACHIER_HANDLES.get(&[#self_name #(#type_names),*], #make)
        }}
    }
}

fn option_str(value: Option<&str>) -> TokenStream {
    match value {
        Some(text) => quote!(::core::option::Option::Some(#text)),
        None => quote!(::core::option::Option::None),
    }
}

/// The statements that set the handle's settings from the arguments.
fn settings(f: &Analysis, args: &Args) -> TokenStream {
    let s = quote!(__cachier_settings);
    let mut out = TokenStream::new();
    let duration = |d: &DurationArg| match d {
        DurationArg::Millis(ms) => quote!(::std::time::Duration::from_millis(#ms)),
        DurationArg::Expr(expr) => quote_spanned! {expr.span()=>
            { let __cachier_duration: ::std::time::Duration = #expr; __cachier_duration }
        },
    };
    if let Some(d) = &args.stale_after {
        let d = duration(d);
        out.extend(quote!(#s.stale_after = ::core::option::Option::Some(#d);));
    }
    // The attribute alone decides `next_time`: it changes what the generated code needs.
    let next_time = args.next_time.is_some();
    out.extend(quote!(#s.next_time = #next_time;));
    if let Some(d) = &args.wait_for_calc_timeout {
        let d = duration(d);
        out.extend(quote!(#s.wait_for_calc_timeout = ::core::option::Option::Some(#d);));
    }
    if let Some(d) = &args.lease {
        let d = duration(d);
        out.extend(quote!(#s.lease = #d;));
    }
    if let Some(yes) = args.allow_none {
        out.extend(quote!(#s.allow_none = #yes;));
    }
    if let Some(size) = &args.entry_size_limit {
        let size = match size {
            SizeArg::Bytes(n) => {
                let n = proc_macro2::Literal::u64_unsuffixed(*n);
                quote!(#n)
            }
            SizeArg::Expr(expr) => quote_spanned! {expr.span()=>
                { let __cachier_size: usize = #expr; __cachier_size }
            },
        };
        out.extend(quote!(#s.entry_size_limit = ::core::option::Option::Some(#size);));
    }
    // A strict cache's errors come back only where the signature has room for them.
    if f.fallible {
        let output = &f.output;
        out.extend(quote! {
            let __cachier_carries = {
                use ::cachier_core::__private::{CarryByFrom as _, CarryNot as _};
                (&&::cachier_core::__private::Carry::<
                    <#output as ::cachier_core::__private::Fallible>::Error,
                >::new())
                    .carries()
            };
            if !__cachier_carries {
                #s.strict = false;
            }
        });
    } else {
        out.extend(quote!(#s.strict = false;));
    }
    out
}

/// The key: `key = ...`, else the arguments in the key (one: itself; several: a tuple; none:
/// `()`), each borrowed. A small generic function makes it, bound by `KeyPart` alone, so a part
/// that does not serialize is one error, at that part.
fn key(f: &Analysis, args: &Args) -> TokenStream {
    let parts: Vec<TokenStream> = match &args.key {
        Some(expr) => vec![quote_spanned!(expr.span()=> &(#expr))],
        None => f
            .params
            .iter()
            .filter(|p| p.in_key)
            .map(|p| {
                let outer = &p.outer;
                quote_spanned!(p.ty.span()=> &#outer)
            })
            .collect(),
    };
    if parts.is_empty() {
        return quote!(__cachier_handle.key(&()));
    }
    let types: Vec<Ident> = (0..parts.len())
        .map(|i| format_ident!("__CachierPart{}", i))
        .collect();
    let values: Vec<Ident> = (0..parts.len())
        .map(|i| format_ident!("__cachier_part{}", i))
        .collect();
    let key = match values.as_slice() {
        [one] => quote!(::cachier_core::__private::KeyPart::part(#one)),
        many => quote!(&(#(::cachier_core::__private::KeyPart::part(#many)),*)),
    };
    quote! {{
        fn __cachier_key<#(#types: ::cachier_core::__private::KeyPart + ?::core::marker::Sized),*>(
            handle: &::cachier_core::Function,
            #(#values: &#types),*
        ) -> ::cachier_core::Result<::cachier_core::Key> {
            handle.key(#key)
        }
        __cachier_key(__cachier_handle, #(#parts),*)
    }}
}

/// The body, as a block that evaluates to the function's return type (a `return` in the body
/// leaves this block, not the generated function).
fn body_value(item: &ItemFn, f: &Analysis, rebinds: &TokenStream) -> TokenStream {
    let block = &item.block;
    let output = &f.output;
    if f.is_async {
        quote! {
            async move {
                #rebinds
                let __cachier_ret: #output = #block;
                #[allow(unreachable_code)]
                __cachier_ret
            }
            .await
        }
    } else {
        // The statements, not the block: `{ #rebinds { x * x } }` would set off `unused_braces`
        // on the user's own braces.
        let stmts = &block.stmts;
        quote! {
            (move || -> #output {
                #rebinds
                #(#stmts)*
            })()
        }
    }
}

/// The body's value as the `Result` the front end expects.
fn as_result(f: &Analysis, value: TokenStream) -> TokenStream {
    let output = &f.output;
    if f.fallible {
        quote! {{
            let __cachier_result: #output = #value;
            __cachier_result
        }}
    } else {
        quote! {
            ::core::result::Result::<#output, ::core::convert::Infallible>::Ok(#value)
        }
    }
}

/// The compute step without `next_time`: it borrows what the call borrows.
fn scoped_compute(item: &ItemFn, f: &Analysis) -> TokenStream {
    let rebinds: TokenStream = f
        .params
        .iter()
        .map(|p| {
            let (pat, ty, outer) = (&p.pat, &p.ty, &p.outer);
            quote!(let #pat: #ty = #outer;)
        })
        .collect();
    let value = as_result(f, body_value(item, f, &rebinds));
    if f.is_async {
        quote!(move || async move { #value })
    } else {
        quote!(move || #value)
    }
}

/// The compute step under `next_time`: it copies the arguments when it runs, and makes a
/// `'static` future (or closure) of the copies.
fn detached_compute(item: &ItemFn, f: &Analysis) -> TokenStream {
    let mut copies = TokenStream::new();
    let mut rebinds = TokenStream::new();
    let mut call_args = Vec::new();
    for (i, p) in f.params.iter().enumerate() {
        let copy = format_ident!("__cachier_copy{}", i);
        let (pat, ty, outer) = (&p.pat, &p.ty, &p.outer);
        match &p.reference {
            Some((_, elem)) => {
                copies.extend(quote_spanned! {ty.span()=>
                    let #copy = ::cachier_core::__private::own_for_refresh::<#elem>(#outer);
                });
                rebinds.extend(quote! {
                    let #pat = ::std::borrow::Borrow::<#elem>::borrow(&#copy);
                });
                call_args.push(quote!(::std::borrow::Borrow::<#elem>::borrow(&#copy)));
            }
            None => {
                copies.extend(quote_spanned! {ty.span()=>
                    let #copy = ::cachier_core::__private::copy_for_refresh(&#outer);
                });
                rebinds.extend(quote!(let #pat: #ty = #copy;));
                call_args.push(quote!(#copy));
            }
        }
    }
    let value = match &f.receiver {
        // A method's body runs in its hidden sibling, on a copy of `self`.
        Some(receiver) => {
            let this = if receiver.by_ref {
                copies.extend(quote_spanned! {receiver.span=>
                    let __cachier_self = ::cachier_core::__private::copy_for_refresh(self);
                });
                quote!(&__cachier_self)
            } else {
                copies.extend(quote_spanned! {receiver.span=>
                    let __cachier_self = ::cachier_core::__private::copy_for_refresh(&self);
                });
                quote!(__cachier_self)
            };
            let sibling = sibling_name(f);
            let types = &f.type_params;
            let turbofish = (!types.is_empty()).then(|| quote!(::<#(#types),*>));
            let await_ = f.is_async.then(|| quote!(.await));
            as_result(
                f,
                quote!(Self::#sibling #turbofish (#this, #(#call_args),*) #await_),
            )
        }
        None => as_result(f, body_value(item, f, &rebinds)),
    };
    if f.is_async {
        quote! {
            || {
                #copies
                async move { #value }
            }
        }
    } else {
        quote! {
            || {
                #copies
                move || #value
            }
        }
    }
}

/// The companion's doc comment.
fn companion_doc(f: &Analysis, args: &Args) -> String {
    let key = if args.key.is_some() {
        "the value of its `key = ...` expression".to_string()
    } else {
        let names: Vec<String> = f
            .params
            .iter()
            .filter(|p| p.in_key)
            .map(|p| match &p.name {
                Some(name) => name.to_string(),
                None => "_".to_string(),
            })
            .collect();
        match names.as_slice() {
            [] => "`()` (it has no arguments in the key)".to_string(),
            [one] => format!("the argument `{one}` itself"),
            many => format!("the tuple `({})`", many.join(", ")),
        }
    };
    format!(
        " The cache handle of `{}`, made by `#[cachier]`: `clear`, `remove`, `precache`, \
         `stats`, `key`.\n\n Its results are keyed by {key}: pass the same to `remove` and \
         `precache`.",
        f.name
    )
}
