// Package sinks stores credential bundles where database clients read them.
//
// # File sink
//
// A [File] sink owns one directory and lays it out like a Kubernetes projected volume
// (layout "pem" shown; "libpq" uses postgresql.crt, postgresql.key and root.crt):
//
//	Dir/..2025_03_01_12_00_00.123456789.9f3a1c2e/  a generation: key.pem, cert.pem, ca.pem
//	Dir/..2025_02_01_12_00_00.000000000.0c1d2e3f/  the previous generation
//	Dir/..data    -> ..2025_03_01_12_00_00.123456789.9f3a1c2e
//	Dir/cert.pem  -> ..data/cert.pem
//	Dir/key.pem   -> ..data/key.pem
//	Dir/ca.pem    -> ..data/ca.pem
//	Dir/..lock                                      flock(2) file serialising writers (0600)
//
// Every name starting with ".." is reserved for the sink.
//
// Besides certificate, key and CA, a sink may write (each only when configured, all in
// the same generation, so they switch together): the same key as PKCS#8 DER (key.pk8 /
// postgresql.pk8, always, for pgjdbc), the login token files (token, .pgpass), Java key
// stores (keystore.p12, truststore.p12; see PKCS12Options) and connection files
// (pg_service.conf and connection.env for PostgreSQL engines, my.cnf and connection.env
// for MySQL; see Connection). [File.Names] is the one list of the visible names the sink
// writes for a bundle: Write checks every one of them before writing anything, and
// Current expects exactly these. Each generation also holds "..meta.json" (never a
// visible name): the bundle's Issued, TokenExpiry, Host, Engine and DNSName, which
// Current returns; an unchanged bundle with a later Issued (a CA-only instance's next
// download) replaces only that file, atomically.
//
// A write builds a complete new generation directory — each file created exclusively,
// owner and exact mode set on the open descriptor before any data, data fsynced, the
// key first, then the certificate, then the CA; then the directory itself is fsynced —
// and switches to it with a single rename(2) of a fresh "..data_tmp" symlink over
// "..data". That rename is the only commit point; the sink directory is fsynced after
// it and the link repair below (once for both). The visible names are relative symlinks
// through "..data", so they switch with it.
// A failure or a cancelled context before the rename removes the partial generation and
// leaves the previous files untouched. After the rename the sink creates missing visible
// links, removes its own links that the new bundle does not use (cert and key of a
// CA-only bundle), keeps the previous generation and removes older ones and leftovers of
// crashed writes. Every Write re-checks and repairs all of this, even when the bundle is
// unchanged, so a crash at any point is healed by the next Write.
//
// # What readers see
//
// No reader ever sees a partly written file: files are complete and fsynced before they
// become reachable. A reader that resolves the current generation once — readlink of
// Dir/..data, then opening cert, key and CA inside that generation directory — always
// gets a matching certificate, key and CA. The previous generation stays readable until
// the next rotation, so such a reader has a whole rotation period to finish.
//
// A client that opens the visible names one after another resolves "..data" on each
// open. libpq opens the certificate, then the key; if a rotation's rename falls in the
// microseconds between those two opens it gets the old certificate and the new key and
// fails with "certificate does not match private key"; its next connection gets a
// matching pair. The window is the time between the client's two open calls and cannot
// be closed from the writer's side. Consumers that must never see a mismatch should read
// through Dir/..data (resolved once) or a generation directory. Do not bind-mount a
// single visible file into a container: the mount pins one generation, which the sink
// deletes two rotations later.
//
// # Safety
//
// Nothing is written through a symlink the sink did not create. All operations are
// relative to a descriptor of Dir opened with O_DIRECTORY|O_NOFOLLOW and use O_NOFOLLOW
// or lstat semantics. The sink refuses, with an error naming the path, when Dir is a
// symlink, when a visible name exists as anything other than its own symlink to
// "..data/<name>" (a file the user wrote is never overwritten or deleted), or when
// "..data" is not a symlink to a generation directory inside Dir.
//
// # Concurrency
//
// Write calls on one File are serialised by a mutex, and each Write holds an exclusive
// flock(2) on Dir/..lock, so writers in other processes (or File values) that take the
// same lock — see [File.Lock] — never interleave. The lock file is 0600: only the
// agent's user (or root) can take it, so no other local user can hold it to stop
// rotations. Current takes no lock: it resolves
// "..data" once and reads a consistent generation.
//
// The package uses Unix system calls (openat, renameat, flock) and targets Linux.
package sinks
