//! PostgreSQL for tests: a real cluster (Debian's `initdb`, `pg_ctl`) shared by a test
//! binary, one database per server (`PgDatabase`), the server's `--db` arguments, SQL
//! reads of a database, and `PEERCHAT_TEST_DB=postgres` mode.
//!
//! Owns the PostgreSQL processes and databases; it must not start peerchat servers.

use super::*;

/// A real PostgreSQL server from Debian's packages (`initdb`, `pg_ctl`), in a temporary
/// folder, listening on 127.0.0.1 on a free port and on a unix socket in that folder,
/// with fsync off (test data only). As root it runs as the `postgres` user (PostgreSQL
/// refuses root). Stopped and deleted on drop.
pub struct Postgres {
    /// The cluster's folder (data, socket, log).
    pub(super) dir: TempDir,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// Where `pg_ctl` is.
    pub(super) bin: PathBuf,
    /// `(uid, gid)` to run the tools as, when we are root.
    pub(super) run_as: Option<(u32, u32)>,
}

/// Counts databases made in this test binary, for unique names.
pub(super) static PG_DATABASES: AtomicUsize = AtomicUsize::new(0);

/// The folder with `initdb` and `pg_ctl`: the newest /usr/lib/postgresql/*/bin, else
/// the PATH.
pub(super) fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
    })
}

/// A fresh `initdb` cluster for the PostgreSQL in `bin`, made once and kept in the
/// target folder (`CARGO_TARGET_TMPDIR`) for every test binary and run: instances copy
/// it (`cp -a`) instead of running `initdb` each. Made in a temporary folder and renamed
/// into place, so a concurrent test binary never sees half of one (the loser of a race
/// deletes its own copy).
pub(super) fn pg_template(bin: &Path, run_as: Option<(u32, u32)>) -> Result<PathBuf, String> {
    use std::os::unix::process::CommandExt;
    let tag: String = bin
        .display()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let template = root.join(format!("pg-template{tag}"));
    if template.join("PG_VERSION").exists() {
        return Ok(template);
    }
    let work = tempfile::Builder::new()
        .prefix("pg-initdb")
        .tempdir_in(root)
        .map_err(|e| e.to_string())?;
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(work.path(), Some(uid), Some(gid)).map_err(|e| e.to_string())?;
    }
    let data = work.path().join("data");
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "-N",
            "-D",
        ])
        .arg(&data)
        .current_dir(work.path())
        .stdin(Stdio::null());
    if let Some((uid, gid)) = run_as {
        initdb.uid(uid).gid(gid);
    }
    let out = initdb
        .output()
        .map_err(|e| format!("running {initdb:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{initdb:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // Another binary may have won the race: its template is as good as ours.
    if fs::rename(&data, &template).is_err() && !template.join("PG_VERSION").exists() {
        return Err(format!("could not keep {}", template.display()));
    }
    Ok(template)
}

/// The uid and gid of the `postgres` user, from /etc/passwd.
pub(super) fn postgres_user() -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
}

impl Postgres {
    /// Starts a new PostgreSQL, or says why not (not installed, say) in `Err`.
    pub fn start() -> Result<Postgres, String> {
        use std::os::unix::process::CommandExt;
        let bin = postgres_bin().ok_or("PostgreSQL is not installed (no initdb/pg_ctl)")?;
        let root = unsafe { libc::geteuid() } == 0;
        let run_as = if root {
            Some(postgres_user().ok_or("running as root and there is no postgres user")?)
        } else {
            None
        };
        let dir = TempDir::new().map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| e.to_string())?;
        }
        let pg = Postgres {
            dir,
            port: free_port(),
            bin,
            run_as,
        };
        let data = pg.dir.path().join("data");
        // A copy of a cluster `initdb` made once (seconds of CPU, paid by every test
        // binary before): copying it takes a fraction of that.
        let template = pg_template(&pg.bin, run_as)?;
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&data)
            .status()
            .map_err(|e| format!("copying {}: {e}", template.display()))?;
        if !copied.success() {
            return Err(format!("copying {} failed", template.display()));
        }
        let mut start = Command::new(pg.bin.join("pg_ctl"));
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(pg.dir.path().join("log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
                 -c full_page_writes=off -c max_connections=300",
                pg.port,
                pg.dir.path().display()
            ))
            .args(["-w", "-t", "30", "start"])
            .current_dir(pg.dir.path());
        if let Some((uid, gid)) = pg.run_as {
            start.uid(uid).gid(gid);
        }
        let out = start
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {start:?}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{start:?} failed: {}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                fs::read_to_string(pg.dir.path().join("log")).unwrap_or_default()
            ));
        }
        Ok(pg)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// A client connected to database `name`.
    pub fn client(&self, name: &str) -> ::postgres::Client {
        ::postgres::Client::connect(&self.url(name), ::postgres::NoTls)
            .unwrap_or_else(|e| panic!("connecting to PostgreSQL: {e}"))
    }

    /// Creates a new empty database and returns its name.
    pub fn create_database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            PG_DATABASES.fetch_add(1, Ordering::SeqCst)
        );
        self.client("postgres")
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("CREATE DATABASE");
        name
    }

    /// Drops database `name`, cutting off whoever is still connected.
    pub fn drop_database(&self, name: &str) {
        if let Ok(mut c) = ::postgres::Client::connect(&self.url("postgres"), ::postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        use std::os::unix::process::CommandExt;
        let mut stop = Command::new(self.bin.join("pg_ctl"));
        stop.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            stop.uid(uid).gid(gid);
        }
        let _ = stop.status();
    }
}

/// One PostgreSQL for the whole test binary while anyone uses it: started by the first
/// user, stopped when the last `Arc` goes. `Err` says why there is none.
pub fn shared_postgres() -> Result<Arc<Postgres>, String> {
    static SHARED: Mutex<std::sync::Weak<Postgres>> = Mutex::new(std::sync::Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(pg) = shared.upgrade() {
        return Ok(pg);
    }
    let pg = Arc::new(Postgres::start()?);
    *shared = Arc::downgrade(&pg);
    Ok(pg)
}

/// PostgreSQL for a test that needs one, or `None` after printing a plain skip message
/// when PostgreSQL is not installed. Under `PEERCHAT_TEST_DB=postgres` a missing
/// PostgreSQL fails the test instead.
pub fn postgres_or_skip(test: &str) -> Option<Arc<Postgres>> {
    match shared_postgres() {
        Ok(pg) => Some(pg),
        Err(why) if !postgres_mode() => {
            eprintln!("SKIPPED {test}: {why}");
            None
        }
        Err(why) => panic!("{test}: PEERCHAT_TEST_DB=postgres but {why}"),
    }
}

/// True when the server suite runs against PostgreSQL (`PEERCHAT_TEST_DB=postgres`).
pub fn postgres_mode() -> bool {
    std::env::var("PEERCHAT_TEST_DB").is_ok_and(|v| v == "postgres")
}

/// A database of the shared PostgreSQL, dropped when the last server using it goes.
pub struct PgDatabase {
    /// Keeps the PostgreSQL running.
    pub pg: Arc<Postgres>,
    /// The database's name.
    pub name: String,
}

impl PgDatabase {
    /// Creates a new database on `pg`.
    pub fn create(pg: &Arc<Postgres>) -> PgDatabase {
        PgDatabase {
            pg: Arc::clone(pg),
            name: pg.create_database(),
        }
    }

    /// Its URL, for `--db`.
    pub fn url(&self) -> String {
        self.pg.url(&self.name)
    }

    /// A client connected to it.
    pub fn client(&self) -> ::postgres::Client {
        self.pg.client(&self.name)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        self.pg.drop_database(&self.name);
    }
}

/// The PostgreSQL database behind each server folder in postgres mode, while a server of
/// that folder lives (restarts share it).
pub(super) static PG_FOLDERS: Mutex<Vec<(PathBuf, std::sync::Weak<PgDatabase>)>> =
    Mutex::new(Vec::new());

/// The `--db` (and, in postgres mode, TLS) arguments for a server in `dir`. In postgres
/// mode the folder's database is made on first use, its URL written to `dir/pg-url` (the
/// db helpers read it) and the TLS identity made in `dir` as the SQLite mode would.
pub(super) fn db_args(
    dir: &Path,
    opts: &ServerBuilder,
) -> (Vec<std::ffi::OsString>, Option<Arc<PgDatabase>>) {
    let db = dir.join("server.db");
    let given = opts
        .args
        .iter()
        .position(|a| a == "--db")
        .and_then(|i| opts.args.get(i + 1));
    let (mut args, database) = match given {
        // The test chose a database itself (two servers on one PostgreSQL, say).
        Some(url) if url.starts_with("postgres") => {
            fs::write(dir.join("pg-url"), url).expect("write pg-url");
            (Vec::new(), None)
        }
        Some(_) => return (Vec::new(), None),
        None if !postgres_mode() => return (vec!["--db".into(), db.into()], None),
        None => {
            let pg = postgres_or_skip("server suite").expect("postgres mode");
            let mut folders = PG_FOLDERS.lock().unwrap_or_else(|p| p.into_inner());
            folders.retain(|(_, weak)| weak.strong_count() > 0);
            let found = folders
                .iter()
                .find(|(d, _)| d == dir)
                .and_then(|(_, w)| w.upgrade());
            let database = found.unwrap_or_else(|| {
                let database = Arc::new(PgDatabase::create(&pg));
                folders.push((dir.to_path_buf(), Arc::downgrade(&database)));
                database
            });
            fs::write(dir.join("pg-url"), database.url()).expect("write pg-url");
            (vec!["--db".into(), database.url().into()], Some(database))
        }
    };

    if !opts.args.iter().any(|a| a == "--tls-cert") {
        peerchat::crypto::tls::ServerIdentity::load_or_create(None, None, &db)
            .expect("TLS identity for a postgres-mode server");
        args.extend([
            "--tls-cert".into(),
            dir.join("server-cert.pem").into(),
            "--tls-key".into(),
            dir.join("server-key.pem").into(),
        ]);
    }
    (args, database)
}

/// The PostgreSQL URL a postgres-mode server of `db`'s folder uses, if any.
pub fn pg_url_of(db: &Path) -> Option<String> {
    fs::read_to_string(db.with_file_name("pg-url")).ok()
}

/// What `peerchat-server sessions --db` should get for the database at `db`: the path,
/// or the URL in postgres mode.
pub fn db_arg(db: &Path) -> std::ffi::OsString {
    pg_url_of(db).map_or_else(|| db.as_os_str().to_owned(), Into::into)
}

/// Rows of a query on a postgres-mode server's database, each column as text (NULL as
/// `None`).
pub fn pg_rows(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    let mut client = ::postgres::Client::connect(url, ::postgres::NoTls).expect("connect");
    client
        .simple_query(sql)
        .expect("query")
        .into_iter()
        .filter_map(|m| match m {
            ::postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The rows of each of `queries`, all read in one repeatable-read transaction (one
/// moment of the database), each column as text.
pub fn pg_snapshot<const N: usize>(url: &str, queries: [&str; N]) -> [Vec<Vec<Option<String>>>; N] {
    let mut client = ::postgres::Client::connect(url, ::postgres::NoTls).expect("connect");
    let mut tx = client
        .build_transaction()
        .isolation_level(::postgres::IsolationLevel::RepeatableRead)
        .start()
        .expect("begin");
    let result = queries.map(|sql| {
        tx.simple_query(sql)
            .expect("query")
            .into_iter()
            .filter_map(|m| match m {
                ::postgres::SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_string))
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    });
    tx.commit().expect("commit");
    result
}

/// Skips a test that reads the SQLite file itself when the suite runs on PostgreSQL;
/// true means return now.
pub fn sqlite_only(test: &str) -> bool {
    if postgres_mode() {
        eprintln!("SKIPPED {test} under PostgreSQL: it reads the SQLite file directly");
        return true;
    }
    false
}
