//! The web front end's routes: the page's files and the JSON API.
//!
//! Owns mapping each request to one answer: `GET /` and the assets, `GET /api/state`,
//! `GET /api/events?since=N` (long poll), `POST /api/login`, `POST /api/command`,
//! `POST /api/upload` (streamed to the staging folder) and `GET /api/file?id=N`. Every
//! request first passes `guard::Guard::check`; bodies are capped. It must not decide
//! client behaviour: commands go to the core as they are.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::Deserialize;
use serde_json::{Value, json};
use tiny_http::{Header, Method, Request, Response, StatusCode};

use super::Shared;
use super::guard::{self, Guard};
use crate::client::core::Command;
use crate::protocol::file_name::safe_file_name;
use crate::protocol::limits::{GUI_LONG_POLL_WAIT, GUI_MAX_BODY, GUI_MAX_UPLOAD};

/// The page, compiled in.
const INDEX_HTML: &str = include_str!("assets/index.html");
/// The page's script, compiled in.
const APP_JS: &str = include_str!("assets/app.js");
/// The page's style, compiled in.
const APP_CSS: &str = include_str!("assets/app.css");

/// The page's total size in bytes (the bench reports it).
pub fn page_size() -> usize {
    INDEX_HTML.len() + APP_JS.len() + APP_CSS.len()
}

/// How long a command waits for room in the core's queue.
const COMMAND_WAIT: Duration = Duration::from_secs(5);

fn header(name: &str, value: &str) -> Option<Header> {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

fn respond<R: Read>(request: Request, mut response: Response<R>, content_type: &str) {
    for h in guard::security_headers() {
        response.add_header(h);
    }
    if let Some(h) = header("Content-Type", content_type) {
        response.add_header(h);
    }
    if let Err(e) = request.respond(response) {
        log::debug!("GUI answer not sent: {e}");
    }
}

fn text(request: Request, status: u16, body: &str) {
    respond(
        request,
        Response::from_string(body).with_status_code(StatusCode(status)),
        "text/plain; charset=utf-8",
    );
}

fn json_answer(request: Request, status: u16, body: &Value) {
    respond(
        request,
        Response::from_string(body.to_string()).with_status_code(StatusCode(status)),
        "application/json",
    );
}

/// Answers a request that found no free thread.
pub fn busy(request: Request) {
    text(request, 503, "busy: too many requests at once");
}

/// One request, start to finish.
pub fn handle(shared: &Shared, guard: &Guard, request: Request) {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let path = path.to_string();
    let query = query.to_string();
    let api = path.starts_with("/api/");
    if let Err(refusal) = guard.check(&request, api) {
        return text(request, 403, refusal.text());
    }
    let method = request.method().clone();
    match (method, path.as_str()) {
        (Method::Get, "/" | "/index.html") => respond(
            request,
            Response::from_string(INDEX_HTML),
            "text/html; charset=utf-8",
        ),
        (Method::Get, "/app.js") => respond(
            request,
            Response::from_string(APP_JS),
            "text/javascript; charset=utf-8",
        ),
        (Method::Get, "/app.css") => respond(
            request,
            Response::from_string(APP_CSS),
            "text/css; charset=utf-8",
        ),
        (Method::Get, "/api/state") => {
            let state = serde_json::to_value(&*shared.state()).unwrap_or(Value::Null);
            json_answer(request, 200, &state)
        }
        (Method::Get, "/api/events") => events(shared, request, &query),
        (Method::Post, "/api/login") => login(shared, request),
        (Method::Post, "/api/command") => command(shared, request),
        (Method::Post, "/api/upload") => upload(shared, request),
        (Method::Get, "/api/file") => file(shared, request, &query),
        _ => text(request, 404, "not found"),
    }
}

fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `GET /api/events?since=N[&timeout=S]`: events with ids above N, waiting for one.
fn events(shared: &Shared, request: Request, query: &str) {
    let since = param(query, "since")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let wait = param(query, "timeout")
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(GUI_LONG_POLL_WAIT, Duration::from_secs)
        .min(GUI_LONG_POLL_WAIT);
    let Some(_slot) = shared.log.slot() else {
        return text(request, 429, "too many long polls at once");
    };
    let events = shared.log.since(since, wait);
    json_answer(request, 200, &Value::Array(events))
}

/// Reads a JSON body of at most `GUI_MAX_BODY` bytes.
fn read_json<T: for<'de> Deserialize<'de>>(request: &mut Request) -> Result<T, (u16, String)> {
    let is_json = request
        .headers()
        .iter()
        .any(|h| h.field.equiv("Content-Type") && h.value.as_str().starts_with("application/json"));
    if !is_json {
        return Err((415, "send JSON (Content-Type: application/json)".into()));
    }
    if request.body_length().is_some_and(|n| n > GUI_MAX_BODY) {
        return Err((413, format!("body over {GUI_MAX_BODY} bytes")));
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(GUI_MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| (400, format!("cannot read the body: {e}")))?;
    if body.len() > GUI_MAX_BODY {
        return Err((413, format!("body over {GUI_MAX_BODY} bytes")));
    }
    serde_json::from_slice(&body).map_err(|e| (400, format!("bad JSON: {e}")))
}

#[derive(Deserialize)]
struct Answer {
    answer: String,
}

/// `POST /api/login {"answer": "..."}`: answers the pending login question.
fn login(shared: &Shared, mut request: Request) {
    let answer: Answer = match read_json(&mut request) {
        Ok(a) => a,
        Err((status, why)) => return text(request, status, &why),
    };
    if shared.state().question.is_none() {
        return text(request, 409, "no login question is waiting");
    }
    match shared.answers.try_send(answer.answer) {
        Ok(()) => json_answer(request, 200, &json!({"ok": true})),
        Err(_) => text(request, 409, "an answer is already on its way"),
    }
}

/// `POST /api/command {"type": "...", ...}`: one core command.
fn command(shared: &Shared, mut request: Request) {
    let command: Command = match read_json(&mut request) {
        Ok(c) => c,
        Err((status, why)) => return text(request, status, &why),
    };
    if matches!(command, Command::SendFile { .. }) {
        // A path from the page could name any file on this machine: files to send come
        // through /api/upload into the staging folder.
        return text(request, 400, "send files with POST /api/upload");
    }
    // What the snapshot needs to know of the page's own asking: which page of users it
    // looks at, and the text of a message through the server (the core's answer names
    // only the recipient).
    match &command {
        Command::List { offset } => shared.state().users_offset = *offset,
        Command::Msg { to, text } => shared.state().mail_sending(to, text),
        _ => {}
    }
    send(shared, request, command)
}

fn send(shared: &Shared, request: Request, command: Command) {
    let Some(commands) = shared.commands() else {
        return text(request, 409, "not logged in");
    };
    match commands.send_timeout(command, COMMAND_WAIT) {
        Ok(()) => json_answer(request, 202, &json!({"ok": true})),
        Err(_) => text(request, 503, "the client is busy or stopping"),
    }
}

fn decoded_header(request: &Request, name: &str) -> Option<String> {
    let value = request
        .headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))?
        .value
        .as_str()
        .to_string();
    percent_decode_str(&value)
        .decode_utf8()
        .ok()
        .map(|v| v.into_owned())
}

/// `POST /api/upload` with headers `X-File-Name` and `X-To` (URL-encoded) and the
/// file's bytes as the body: streamed to `<data-dir>/<user>/staging/<n>/<name>`, then
/// offered to `X-To`.
fn upload(shared: &Shared, mut request: Request) {
    let Some(name) = decoded_header(&request, "X-File-Name") else {
        return text(request, 400, "X-File-Name is missing");
    };
    let name = match safe_file_name(&name) {
        Ok(name) => name.to_string(),
        Err(why) => return text(request, 400, &why),
    };
    let to = decoded_header(&request, "X-To").filter(|t| !t.is_empty());
    if request
        .body_length()
        .is_some_and(|n| n as u64 > GUI_MAX_UPLOAD)
    {
        return text(
            request,
            413,
            &format!("files over {GUI_MAX_UPLOAD} bytes cannot be uploaded"),
        );
    }
    if shared.commands().is_none() {
        return text(request, 409, "not logged in");
    }
    let Some(staging) = shared.staging_dir() else {
        return text(request, 409, "not logged in");
    };
    let dir = shared.staging.next_dir(&staging);
    let path = dir.join(&name);
    match store(&mut request, &dir, &path) {
        Ok(()) => {
            shared.staging.uploaded(&name, dir);
            send(shared, request, Command::SendFile { path, to })
        }
        Err((status, why)) => {
            let _ = fs::remove_dir_all(&dir);
            text(request, status, &why)
        }
    }
}

/// Streams the body into `path` (never whole in memory), at most `GUI_MAX_UPLOAD`.
fn store(request: &mut Request, dir: &PathBuf, path: &PathBuf) -> Result<(), (u16, String)> {
    fs::create_dir_all(dir).map_err(|e| (500, format!("cannot stage the file: {e}")))?;
    let mut out = File::create(path).map_err(|e| (500, format!("cannot stage the file: {e}")))?;
    let copied = io::copy(&mut request.as_reader().take(GUI_MAX_UPLOAD + 1), &mut out)
        .map_err(|e| (400, format!("upload broken off: {e}")))?;
    if copied > GUI_MAX_UPLOAD {
        return Err((
            413,
            format!("files over {GUI_MAX_UPLOAD} bytes cannot be uploaded"),
        ));
    }
    Ok(())
}

/// `GET /api/file?id=N`: a received file, as an attachment.
fn file(shared: &Shared, request: Request, query: &str) {
    let id = param(query, "id").and_then(|v| v.parse::<u64>().ok());
    let found = id.and_then(|id| {
        let state = shared.state();
        let view = state.transfers.get(&id)?;
        Some((view.saved_as.clone()?, view.row.name.clone()))
    });
    let Some((path, name)) = found else {
        return text(request, 404, "no received file with that id");
    };
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) => return text(request, 404, &format!("cannot open the file: {e}")),
    };
    // A known length, not chunks: the browser can show the download's progress.
    let mut response = Response::from_file(file).with_chunked_threshold(usize::MAX);
    let encoded = utf8_percent_encode(&name, NON_ALPHANUMERIC).to_string();
    if let Some(h) = header(
        "Content-Disposition",
        &format!("attachment; filename*=UTF-8''{encoded}"),
    ) {
        response.add_header(h);
    }
    respond(request, response, "application/octet-stream")
}
