//! Connection commands: PING, ECHO, QUIT, HELLO, SELECT, AUTH, CLIENT.

use super::{After, Args, CmdError, CmdResult, Ctx, sub_arity};

use super::CommandSpec;
use super::spec::spec;

/// This family's rows of the command table.
#[rustfmt::skip]
pub(super) static FAMILY: &[CommandSpec] = &[
    spec!("ping", -1, ping, [Fast, Stale], (0, 0, 0), "connection", "1.0.0", "[message]", "Returns the server's liveliness response."),
    spec!("echo", 2, echo, [Fast], (0, 0, 0), "connection", "1.0.0", "message", "Returns the given string."),
    spec!("quit", -1, quit, [Fast, NoAuth, Noscript, Stale, Loading, AllowBusy, TxControl], (0, 0, 0), "connection", "1.0.0", "", "Closes the connection."),
    spec!("hello", -1, hello, [Fast, Noscript, Stale, Loading, NoAuth], (0, 0, 0), "connection", "6.0.0", "[protover [AUTH username password] [SETNAME clientname]]", "Handshakes with the server: protocol version, client name."),
    spec!("select", 2, select, [Fast, Stale, Loading], (0, 0, 0), "connection", "1.0.0", "index", "Changes the selected database (only 0 exists)."),
    spec!("auth", -2, auth, [Fast, Noscript, Stale, Loading, NoAuth], (0, 0, 0), "connection", "1.0.0", "[username] password", "Authenticates the connection."),
    spec!("client", -2, client, [Admin, Noscript, Loading, Stale], (0, 0, 0), "connection", "2.4.0", "subcommand [argument...]", "CLIENT SETNAME, GETNAME, ID, LIST, INFO."),
];

/// The Redis version whose semantics kriminoDB follows; reported where
/// clients look for a Redis version (HELLO, INFO) to choose features.
pub const REDIS_COMPAT_VERSION: &str = "7.0.0";

pub fn ping(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    match args.len() {
        1 => ctx.reply.simple("PONG"),
        2 => ctx.reply.bulk(args.get(1)),
        _ => return Err(CmdError::wrong_arity("ping")),
    }
    Ok(())
}

pub fn echo(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    ctx.reply.bulk(args.get(1));
    Ok(())
}

pub fn quit(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    ctx.reply.ok();
    ctx.after = After::Close;
    Ok(())
}

pub fn select(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let db = args.int(1)?;
    if db != 0 {
        return Err(CmdError::DB_RANGE);
    }
    ctx.reply.ok();
    Ok(())
}

const NO_PASSWORD: &str = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";
const WRONG_PASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const HELLO_NOAUTH: &str = "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time";

/// The only user is Redis's `default` user: without `--requirepass` it is a
/// `nopass` user (any password works, as in Redis); with it, the password
/// must match. On success the connection is authenticated.
fn check_credentials(ctx: &Ctx<'_>, user: &[u8], password: &[u8]) -> CmdResult {
    if user != b"default" {
        return Err(CmdError::fixed(WRONG_PASS));
    }
    if let Some(expected) = &ctx.services.config.requirepass
        && !password_matches(password, expected.expose())
    {
        return Err(CmdError::fixed(WRONG_PASS));
    }
    ctx.client.set_authenticated();
    Ok(())
}

/// Compares SHA-256 digests in constant time, so neither the password's
/// content nor its length shows in how long a wrong guess takes.
fn password_matches(given: &[u8], expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let given = Sha256::digest(given);
    let expected = Sha256::digest(expected.as_bytes());
    given.as_slice().ct_eq(expected.as_slice()).into()
}

pub fn auth(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    match args.len() {
        2 if ctx.services.config.requirepass.is_none() => Err(CmdError::fixed(NO_PASSWORD)),
        2 => check_credentials(ctx, b"default", args.get(1)),
        3 => check_credentials(ctx, args.get(1), args.get(2)),
        _ => Err(CmdError::SYNTAX),
    }?;
    ctx.reply.ok();
    Ok(())
}

/// Redis accepts client names of printable ASCII without spaces.
fn valid_client_name(name: &[u8]) -> Result<Option<String>, CmdError> {
    if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(CmdError::fixed(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok((!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned()))
}

pub fn hello(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let mut resp3 = ctx.reply.resp3;
    let mut name = None;
    let mut credentials = None;
    if args.len() >= 2 {
        let version = args.int(1).map_err(|_| {
            CmdError::fixed("ERR Protocol version is not an integer or out of range")
        })?;
        if !(2..=3).contains(&version) {
            return Err(CmdError::fixed("NOPROTO unsupported protocol version"));
        }
        resp3 = version == 3;
        let mut i = 2;
        while i < args.len() {
            let remaining = args.len() - i - 1;
            if args.is(i, "AUTH") && remaining >= 2 {
                credentials = Some((args.get(i + 1), args.get(i + 2)));
                i += 3;
            } else if args.is(i, "SETNAME") && remaining >= 1 {
                name = Some(valid_client_name(args.get(i + 1))?);
                i += 2;
            } else {
                return Err(CmdError::new(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(args.get(i))
                )));
            }
        }
    }
    // As Redis: options are parsed first, then credentials checked, and
    // nothing changes unless they pass.
    match credentials {
        Some((user, password)) => check_credentials(ctx, user, password)?,
        None if ctx.services.config.requirepass.is_some() && !ctx.client.is_authenticated() => {
            return Err(CmdError::fixed(HELLO_NOAUTH));
        }
        None => {}
    }
    if let Some(name) = name {
        ctx.client.set_name(name);
    }
    ctx.reply.resp3 = resp3;
    ctx.client.set_resp3(resp3);
    let reply = &mut *ctx.reply;
    reply.map(7);
    reply.bulk(b"server");
    reply.bulk(b"kriminodb");
    reply.bulk(b"version");
    reply.bulk(REDIS_COMPAT_VERSION.as_bytes());
    reply.bulk(b"proto");
    reply.int(if resp3 { 3 } else { 2 });
    reply.bulk(b"id");
    reply.int(ctx.client.id as i64);
    reply.bulk(b"mode");
    reply.bulk(b"standalone");
    reply.bulk(b"role");
    reply.bulk(b"master");
    reply.bulk(b"modules");
    reply.array(0);
    Ok(())
}

pub fn client(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let sub = args.get(1).to_ascii_lowercase();
    match sub.as_slice() {
        b"setname" => {
            sub_arity(args, "client", "setname", 3)?;
            let name = valid_client_name(args.get(2))?;
            ctx.client.set_name(name);
            ctx.reply.ok();
        }
        b"getname" => {
            sub_arity(args, "client", "getname", 2)?;
            match ctx.client.name() {
                Some(name) => ctx.reply.bulk(name.as_bytes()),
                None => ctx.reply.null(),
            }
        }
        b"id" => {
            sub_arity(args, "client", "id", 2)?;
            ctx.reply.int(ctx.client.id as i64);
        }
        b"info" => {
            sub_arity(args, "client", "info", 2)?;
            let line = ctx
                .services
                .clients
                .describe(ctx.client, &ctx.services.clock);
            ctx.reply.verbatim(&line);
        }
        b"list" => {
            sub_arity(args, "client", "list", -2)?;
            let wanted = client_list_filter(args)?;
            let text: String = ctx
                .services
                .clients
                .snapshot()
                .iter()
                .filter(|c| wanted.as_ref().is_none_or(|ids| ids.contains(&c.id)))
                .map(|c| ctx.services.clients.describe(c, &ctx.services.clock))
                .collect();
            ctx.reply.verbatim(&text);
        }
        b"setinfo" => {
            sub_arity(args, "client", "setinfo", 4)?;
            let value = String::from_utf8_lossy(args.get(3)).into_owned();
            if args.is(2, "LIB-NAME") {
                ctx.client.set_lib(Some(value), None);
            } else if args.is(2, "LIB-VER") {
                ctx.client.set_lib(None, Some(value));
            } else {
                return Err(CmdError::new(format!(
                    "ERR Unrecognized option '{}'",
                    String::from_utf8_lossy(args.get(2))
                )));
            }
            ctx.reply.ok();
        }
        b"help" => {
            let lines = [
                "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GETNAME",
                "    Return the name of the current connection.",
                "ID",
                "    Return the ID of the current connection.",
                "INFO",
                "    Return information about the current client connection.",
                "LIST [TYPE normal] [ID id [id ...]]",
                "    Return information about client connections.",
                "SETINFO <LIB-NAME|LIB-VER> <value>",
                "    Set client library name or version.",
                "SETNAME <name>",
                "    Assign the name <name> to the current connection.",
                "HELP",
                "    Print this help.",
            ];
            ctx.reply.help(&lines);
        }
        _ => return Err(CmdError::unknown_subcommand(args.get(1), "client")),
    }
    Ok(())
}

/// `CLIENT LIST [TYPE normal] [ID id ...]`: the client ids to show, if
/// restricted.
fn client_list_filter(args: &Args<'_>) -> Result<Option<Vec<u64>>, CmdError> {
    if args.len() == 2 {
        return Ok(None);
    }
    if args.is(2, "TYPE") && args.len() == 4 {
        // Every client is a normal client; other types have none.
        return Ok(if args.is(3, "normal") {
            None
        } else {
            Some(Vec::new())
        });
    }
    if args.is(2, "ID") && args.len() >= 4 {
        return args
            .iter()
            .skip(3)
            .map(|a| {
                crate::resp::parse_i64(a)
                    .filter(|&id| id > 0)
                    .map(|id| id as u64)
                    .ok_or(CmdError::fixed("ERR Invalid client ID"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some);
    }
    Err(CmdError::SYNTAX)
}

#[cfg(test)]
mod tests {
    use super::password_matches;

    #[test]
    fn passwords_match_only_exactly() {
        assert!(password_matches(b"s3cret", "s3cret"));
        assert!(!password_matches(b"s3cre", "s3cret"));
        assert!(!password_matches(b"s3cret ", "s3cret"));
        assert!(!password_matches(b"S3CRET", "s3cret"));
        assert!(!password_matches(b"", "s3cret"));
        assert!(password_matches("pâss".as_bytes(), "pâss"));
    }
}
