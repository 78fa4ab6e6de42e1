//! Arguments → `Command` (`resp::command::parse`), with a model of the
//! options of SET, SETEX/PSETEX and the EXPIRE family.

use bytes::{Bytes, BytesMut};

use crate::resp::command::{Command, Cond, Expiry, parse};

/// Words the structured mode builds SET and EXPIRE requests from: every
/// option in two spellings, and numbers at and past each bound.
const WORDS: &[&str] = &[
    "NX",
    "XX",
    "GT",
    "LT",
    "GET",
    "KEEPTTL",
    "EX",
    "PX",
    "EXAT",
    "PXAT",
    "nx",
    "xX",
    "gt",
    "Lt",
    "get",
    "keepttl",
    "ex",
    "Px",
    "exat",
    "pXaT",
    "10",
    "0",
    "1",
    "-1",
    "-0",
    "007",
    "+5",
    "",
    "abc",
    "1.5",
    " 1",
    "9223372036854775",
    "9223372036854776",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "18446744073709551616",
    "NXX",
    "PERSIST",
];

/// Command names of the structured mode, and how many words they take
/// before the options.
const SHAPES: &[(&str, usize)] = &[
    ("SET", 2),
    ("set", 2),
    ("EXPIRE", 1),
    ("PEXPIRE", 1),
    ("EXPIREAT", 1),
    ("pexpireat", 1),
    ("SETEX", 1),
    ("PSETEX", 1),
];

/// The `resp_command` target. Even `data[0]`: the rest split on spaces is
/// the request. Odd: a structured request, `data[0] >> 1` picks a command
/// of [`SHAPES`] and each later byte a word of [`WORDS`]. Oracles: a
/// command parses only under a name the metrics know, its keys are among
/// its arguments, an error is one clean RESP error line, and SET, SETEX
/// and the EXPIRE family agree with [`model`].
pub fn resp_command(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut args: Vec<Bytes> = if mode % 2 == 0 {
        rest.split(|&b| b == b' ')
            .map(Bytes::copy_from_slice)
            .collect()
    } else {
        let (name, fixed) = SHAPES[usize::from(mode >> 1) % SHAPES.len()];
        let mut args = vec![Bytes::from_static(name.as_bytes())];
        args.push(Bytes::from_static(b"key"));
        if fixed == 2 {
            args.push(Bytes::from_static(b"value"));
        }
        let words = rest.iter().map(|&b| WORDS[usize::from(b) % WORDS.len()]);
        args.extend(words.map(|w| Bytes::from_static(w.as_bytes())));
        if name.ends_with("SETEX") {
            args.push(Bytes::from_static(b"value"));
        }
        args
    };
    let sent = args.clone();
    let parsed = parse(&mut args);
    match &parsed {
        Ok(cmd) => check_command(&sent, cmd),
        Err(reply) => check_error_line(reply),
    }
    if let Some(expected) = model(&sent) {
        let got = parsed.as_ref().ok().cloned();
        assert_eq!(got, expected, "{sent:?}");
    }
}

fn check_command(sent: &[Bytes], cmd: &Command) {
    let name = Command::metric_name(&sent[0]);
    assert_ne!(name, "unknown", "{cmd:?} parsed from an unknown name");
    let _ = cmd.required_role();
    if let Some((keys, pairs)) = cmd.keys() {
        let args = &sent[1..];
        for k in keys.iter().chain(pairs.iter().flat_map(|(k, v)| [k, v])) {
            assert!(args.contains(k), "{k:?} of {cmd:?} was not sent");
        }
    }
}

fn check_error_line(reply: &crate::resp::Reply) {
    assert!(reply.is_error(), "{reply:?} is not an error");
    // An error line is the same in both protocols.
    for proto in [crate::resp::Protocol::Resp2, crate::resp::Protocol::Resp3] {
        let mut out = BytesMut::new();
        reply.encode(proto, &mut out);
        assert!(out.starts_with(b"-") && out.ends_with(b"\r\n"), "{out:?}");
        let body = &out[..out.len() - 2];
        assert!(!body.contains(&b'\r') && !body.contains(&b'\n'), "{out:?}");
    }
}

/// What SET, SETEX/PSETEX and EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT must parse
/// to (`Some(None)`: an error), or `None` for any other command. Written
/// from Redis's grammar, not from the parser: `SET key value [NX | XX]
/// [GET] [EX s | PX ms | EXAT s | PXAT ms | KEEPTTL]` in any order, each
/// group at most once (GET may repeat); a positive expiry that fits in
/// i64 milliseconds. Numbers are read as the parser documents (`int_arg`:
/// no `+`; leading zeros and `-0` pass, which Redis refuses).
fn model(sent: &[Bytes]) -> Option<Option<Command>> {
    let name = String::from_utf8_lossy(&sent[0]).to_ascii_uppercase();
    let args = &sent[1..];
    Some(match name.as_str() {
        "SET" if args.len() >= 2 => model_set(args),
        "SETEX" | "PSETEX" if args.len() == 3 => {
            let unit = if name == "SETEX" { 1000 } else { 1 };
            positive_ms(&args[1], unit).map(|ms| Command::Set {
                key: args[0].clone(),
                value: args[2].clone(),
                cond: Cond::Always,
                expiry: Expiry::In(ms),
                get: false,
                integer_reply: false,
            })
        }
        "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT" => model_expire(&name, args),
        _ => return None,
    })
}

fn model_set(args: &[Bytes]) -> Option<Command> {
    let (mut cond, mut expiry, mut get) = (None, None, false);
    let mut opts = args[2..].iter();
    while let Some(opt) = opts.next() {
        let opt = String::from_utf8_lossy(opt).to_ascii_uppercase();
        match opt.as_str() {
            "NX" | "XX" if cond.is_none() => {
                cond = Some(if opt == "NX" { Cond::Nx } else { Cond::Xx });
            }
            "GET" => get = true,
            "KEEPTTL" if expiry.is_none() => expiry = Some(Expiry::Keep),
            "EX" | "PX" | "EXAT" | "PXAT" if expiry.is_none() => {
                let unit = if opt.starts_with('E') { 1000 } else { 1 };
                let ms = positive_ms(opts.next()?, unit)?;
                let at = opt.ends_with("AT");
                expiry = Some(if at { Expiry::At(ms) } else { Expiry::In(ms) });
            }
            _ => return None,
        }
    }
    Some(Command::Set {
        key: args[0].clone(),
        value: args[1].clone(),
        cond: cond.unwrap_or(Cond::Always),
        expiry: expiry.unwrap_or(Expiry::None),
        get,
        integer_reply: false,
    })
}

/// EXPIRE key time [NX | XX | GT | LT]: a time at or before now (a
/// non-positive one) is 0, which deletes the key.
fn model_expire(name: &str, args: &[Bytes]) -> Option<Command> {
    if args.len() != 2 && args.len() != 3 {
        return None;
    }
    let unit = if name.starts_with('P') { 1 } else { 1000 };
    let ms = u64::try_from(int(&args[1])?.checked_mul(unit)?.max(0)).ok()?;
    let cond = match args
        .get(2)
        .map(|o| String::from_utf8_lossy(o).to_ascii_uppercase())
    {
        None => Cond::Always,
        Some(o) => match o.as_str() {
            "NX" => Cond::Nx,
            "XX" => Cond::Xx,
            "GT" => Cond::Gt,
            "LT" => Cond::Lt,
            _ => return None,
        },
    };
    let at = if name.ends_with("AT") {
        Expiry::At(ms)
    } else {
        Expiry::In(ms)
    };
    Some(Command::Expire {
        key: args[0].clone(),
        at,
        cond,
    })
}

fn positive_ms(arg: &[u8], unit: i64) -> Option<u64> {
    let ms = int(arg)?.checked_mul(unit)?;
    u64::try_from(ms).ok().filter(|&ms| ms > 0)
}

/// A decimal i64: optional `-`, digits, nothing else.
fn int(arg: &[u8]) -> Option<i64> {
    let digits = arg.strip_prefix(b"-").unwrap_or(arg);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) || arg.len() > 20 {
        return None;
    }
    std::str::from_utf8(arg).ok()?.parse().ok()
}
