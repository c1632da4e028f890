/* email: the lmtp and smtp listeners (SPEC §3) and the MIME normaliser behind them.
 *
 * One protocol engine serves both listeners (listen.lmtp: LMTP, RFC 2033; listen.smtp:
 * SMTP, RFC 5321), with STARTTLS (RFC 3207, from the tls.* files), PIPELINING, SIZE,
 * 8BITMIME and ENHANCEDSTATUSCODES. RCPT looks the inbox up (cd_email_rcpt: 550 5.1.1
 * when none); after DATA the mail is parsed on a worker thread (GMime) and stored once per
 * accepted recipient (cd_email_ingest, one transaction each). A recipient is answered 250
 * only after its commit; 451 4.3.0 while the store is unavailable; 552 5.3.4 beyond
 * limits.max_email_bytes. LMTP answers each accepted recipient after DATA; SMTP answers
 * once (250 when every recipient committed, else the first failure: the MTA's retry is
 * safe because the same Message-ID to the same inbox is stored once). */
#ifndef CONTACTD_EMAIL_H
#define CONTACTD_EMAIL_H

#include <jansson.h>
#include <stddef.h>

struct app;
struct config;
struct email;

#define EMAIL_IDLE_TIMEOUT_S   300 /* RFC 5321 §4.5.3.2.7: at least 5 minutes */
#define EMAIL_MAX_RECIPIENTS   100 /* RFC 5321 §4.5.3.1.8 */
#define EMAIL_MAX_BAD_COMMANDS 10
#define EMAIL_MAX_LINE	       4096 /* a command line (RFC: 512; lenient for long addresses) */

/* Binds the lmtp and smtp listeners of APP->cfg (either may be off). NULL with *error_r
 * (malloc'd) when one cannot be bound or the TLS context cannot be built. Also calls
 * email_mime_init(). */
struct email *email_new(struct app *app, char **error_r);
/* Closes the listeners and every connection (at exit). EM may be NULL. */
void email_free(struct email **em);

/* SIGHUP, like phone_reload_*: prepare (NULL with *error_r, nothing changed), then commit
 * or abort. */
struct email_reload;
struct email_reload *email_reload_prepare(struct email *em, const struct config *cfg,
					  char **error_r);
void email_reload_commit(struct email *em, struct email_reload *rl);
void email_reload_abort(struct email *em, struct email_reload *rl);

/* Drain (app->draining is set): stop accepting; idle sessions get 421 and close, the others
 * after the mail they are sending or waiting for is answered. */
void email_stop_accepting(struct email *em);
/* Mails being received, or waiting on a worker or the store (drain waits for them). */
unsigned email_in_flight(const struct email *em);

/* ---- the MIME normaliser (src/channels/email/mime.c): pure, thread-safe ------------------ */

/* Initialises GMime once per process (any thread; later calls do nothing). */
void email_mime_init(void);

/* Parses one RFC 5322 message (CRLF or LF line ends) into a new JSON object:
 *   from        {email, name} (email NULL when the header has no address; name decoded)
 *   subject     decoded (RFC 2047, raw 8-bit headers read as UTF-8 else Windows-1252)
 *   message_id  without <>; "<sha256 hex>@contactd.invalid" when the mail has none (a hash
 *               of the mail without its trace headers, so a redelivery gets the same one)
 *   in_reply_to, references: arrays of Message-IDs without <>
 *   date        ISO 8601 or null
 *   body        UTF-8 text: the text/plain parts, else readable text from text/html
 *   html        true when the body came from HTML
 *   attachments [{name, type, size, sha256, data (base64)}]; once their decoded bytes
 *               exceed MAX_ATTACHMENT_BYTES in total, later ones have no data (size and
 *               sha256 are kept)
 *   malformed   true when GMime warned about the structure (the mail is still read)
 * Never fails and never rejects: anything unreadable is read as well as it can be. */
json_t *email_mime_parse(const char *data, size_t len, size_t max_attachment_bytes);

/* Readable UTF-8 text from HTML (tags dropped, blocks as lines, entities decoded). The
 * result is malloc'd. */
char *email_html_to_text(const char *html, size_t len);

/* ---- replies (src/channels/email/relay.c) ----------------------------------------------- */

/* RFC 5322 text of one agent reply from its outbox payload (see cd_email_outbox_enqueue in
 * sql/0012_email.sql): From (the inbox), To, Subject (RFC 2047 when not ASCII), Date (NOW,
 * Unix seconds), Message-ID, In-Reply-To, References, and a base64 UTF-8 text/plain body.
 * Returns a malloc'd text with CRLF line ends and its length in *LEN_R, or NULL when the
 * payload lacks from, to or message_id. Pure. */
char *email_reply_format(const json_t *payload, long long now, size_t *len_r);

#endif
