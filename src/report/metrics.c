#include "contactd/metrics.h"

#include "contactd/app.h"
#include "contactd/http.h"
#include "contactd/migrate.h"
#include "contactd/ndjson.h"
#include "contactd/routing.h"
#include "contactd/sla.h"
#include "contactd/store.h"
#include "contactd/stream.h"
#include "contactd/webhooks.h"

#include <event2/buffer.h>
#include <time.h>

void metrics_render(const struct app *app, struct evbuffer *out)
{
	evbuffer_add_printf(out,
			    "# HELP contactd_build_info Build information.\n"
			    "# TYPE contactd_build_info gauge\n"
			    "contactd_build_info{version=\"%s\",schema=\"%d\"} 1\n",
			    CONTACTD_VERSION, migrate_latest_version());
	evbuffer_add_printf(out,
			    "# HELP contactd_start_time_seconds Start time of the process.\n"
			    "# TYPE contactd_start_time_seconds gauge\n"
			    "contactd_start_time_seconds %lld\n",
			    (long long)app->started_at);
	const char *why;
	evbuffer_add_printf(out,
			    "# HELP contactd_ready Whether the daemon is ready (store up, schema "
			    "current).\n"
			    "# TYPE contactd_ready gauge\n"
			    "contactd_ready %d\n",
			    app_ready(app, &why) ? 1 : 0);

	if (app->http) {
		struct http_stats hs;
		http_server_get_stats(app->http, &hs);
		evbuffer_add_printf(
		    out,
		    "# HELP contactd_connections_accepted_total Connections accepted, by "
		    "listener.\n"
		    "# TYPE contactd_connections_accepted_total counter\n"
		    "contactd_connections_accepted_total{listener=\"http\"} %llu\n"
		    "contactd_connections_accepted_total{listener=\"https\"} %llu\n",
		    hs.accepted_plain, hs.accepted_tls);
		evbuffer_add_printf(
		    out,
		    "# HELP contactd_http_requests_total HTTP requests received.\n"
		    "# TYPE contactd_http_requests_total counter\n"
		    "contactd_http_requests_total %llu\n"
		    "# HELP contactd_http_responses_total HTTP responses, by status "
		    "class.\n"
		    "# TYPE contactd_http_responses_total counter\n",
		    hs.requests);
		for (int c = 1; c <= 5; c++)
			evbuffer_add_printf(out,
					    "contactd_http_responses_total{class=\"%dxx\"} %llu\n",
					    c, hs.responses_by_class[c]);
		evbuffer_add_printf(out,
				    "# HELP contactd_http_in_flight Requests waiting on the store "
				    "or a worker.\n"
				    "# TYPE contactd_http_in_flight gauge\n"
				    "contactd_http_in_flight %u\n",
				    http_server_in_flight(app->http));
	}

	struct ndjson_stats ns;
	ndjson_get_stats("client", &ns);
	evbuffer_add_printf(
	    out,
	    "# HELP contactd_connections Open connections, by listener protocol.\n"
	    "# TYPE contactd_connections gauge\n"
	    "contactd_connections{listener=\"client\"} %llu\n"
	    "# HELP contactd_client_frames_total NDJSON frames on the client listeners.\n"
	    "# TYPE contactd_client_frames_total counter\n"
	    "contactd_client_frames_total{direction=\"in\"} %llu\n"
	    "contactd_client_frames_total{direction=\"out\"} %llu\n"
	    "contactd_client_frames_total{direction=\"bad\"} %llu\n",
	    ns.open, ns.frames_in, ns.frames_out, ns.bad_frames);
	struct routing_stats rs;
	routing_get_stats(app->routing, &rs);
	evbuffer_add_printf(out,
			    "# HELP contactd_conversations Conversations in routing, by state.\n"
			    "# TYPE contactd_conversations gauge\n"
			    "contactd_conversations{state=\"waiting\"} %d\n"
			    "contactd_conversations{state=\"offered\"} %d\n"
			    "contactd_conversations{state=\"assigned\"} %d\n"
			    "# HELP contactd_agents Agents known to routing, by status.\n"
			    "# TYPE contactd_agents gauge\n"
			    "contactd_agents{status=\"available\"} %d\n"
			    "contactd_agents{status=\"busy\"} %d\n"
			    "contactd_agents{status=\"away\"} %d\n"
			    "contactd_agents{status=\"offline\"} %d\n"
			    "# HELP contactd_offers_total Offers made and how they ended.\n"
			    "# TYPE contactd_offers_total counter\n"
			    "contactd_offers_total{outcome=\"made\"} %llu\n"
			    "contactd_offers_total{outcome=\"accepted\"} %llu\n"
			    "contactd_offers_total{outcome=\"rejected\"} %llu\n"
			    "contactd_offers_total{outcome=\"timeout\"} %llu\n",
			    rs.waiting, rs.offered, rs.assigned, rs.agents_available,
			    rs.agents_busy, rs.agents_away, rs.agents_offline, rs.offers,
			    rs.accepts, rs.rejects, rs.timeouts);

	struct sla_stats ss;
	sla_get_stats(app->sla, &ss);
	evbuffer_add_printf(out,
			    "# HELP contactd_sla_events_total SLA warnings and breaches fired.\n"
			    "# TYPE contactd_sla_events_total counter\n"
			    "contactd_sla_events_total{state=\"warning\"} %llu\n"
			    "contactd_sla_events_total{state=\"breached\"} %llu\n"
			    "# HELP contactd_escalations_total Escalations after an SLA breach.\n"
			    "# TYPE contactd_escalations_total counter\n"
			    "contactd_escalations_total{reason=\"sla_breach\"} %llu\n"
			    "# HELP contactd_sla_timers_armed SLA firings waiting on their time.\n"
			    "# TYPE contactd_sla_timers_armed gauge\n"
			    "contactd_sla_timers_armed %d\n",
			    ss.warnings, ss.breaches, ss.escalations, ss.armed);

	struct stream_stats sts;
	stream_get_stats(app->stream, &sts);
	evbuffer_add_printf(
	    out,
	    "# HELP contactd_stream_clients Open GET /v1/stream connections.\n"
	    "# TYPE contactd_stream_clients gauge\n"
	    "contactd_stream_clients %u\n"
	    "# HELP contactd_stream_events_sent_total Events written to SSE clients.\n"
	    "# TYPE contactd_stream_events_sent_total counter\n"
	    "contactd_stream_events_sent_total %llu\n"
	    "# HELP contactd_stream_dropped_total SSE clients dropped for not "
	    "reading.\n"
	    "# TYPE contactd_stream_dropped_total counter\n"
	    "contactd_stream_dropped_total{reason=\"slow_consumer\"} %llu\n"
	    "# HELP contactd_events_pruned_total Old events_log rows deleted.\n"
	    "# TYPE contactd_events_pruned_total counter\n"
	    "contactd_events_pruned_total %llu\n",
	    sts.clients, sts.events_sent, sts.dropped_slow, sts.pruned);
	struct webhooks_stats whs;
	webhooks_get_stats(app->webhooks, &whs);
	evbuffer_add_printf(
	    out,
	    "# HELP contactd_webhook_urls Webhook URLs being delivered to.\n"
	    "# TYPE contactd_webhook_urls gauge\n"
	    "contactd_webhook_urls %u\n"
	    "# HELP contactd_webhook_failing_urls Webhook URLs in a failure "
	    "streak.\n"
	    "# TYPE contactd_webhook_failing_urls gauge\n"
	    "contactd_webhook_failing_urls %u\n"
	    "# HELP contactd_webhook_deliveries_total Webhook events answered 2xx.\n"
	    "# TYPE contactd_webhook_deliveries_total counter\n"
	    "contactd_webhook_deliveries_total %llu\n"
	    "# HELP contactd_webhook_failures_total Webhook POST attempts that "
	    "failed (retried).\n"
	    "# TYPE contactd_webhook_failures_total counter\n"
	    "contactd_webhook_failures_total %llu\n"
	    "# HELP contactd_webhook_replies_total Agent replies on API channels handed to the "
	    "webhook outbox.\n"
	    "# TYPE contactd_webhook_replies_total counter\n"
	    "contactd_webhook_replies_total %llu\n",
	    whs.urls, whs.backlog_failing, whs.delivered, whs.failed_attempts, whs.replies);

	struct store_stats st;
	store_get_stats(app->store, &st);
	evbuffer_add_printf(out,
			    "# HELP contactd_store_up Whether at least one database connection "
			    "is up.\n"
			    "# TYPE contactd_store_up gauge\n"
			    "contactd_store_up %d\n"
			    "# HELP contactd_store_connections Database connections that are up.\n"
			    "# TYPE contactd_store_connections gauge\n"
			    "contactd_store_connections %d\n"
			    "# HELP contactd_store_pool_size Configured database connections.\n"
			    "# TYPE contactd_store_pool_size gauge\n"
			    "contactd_store_pool_size %d\n"
			    "# HELP contactd_store_queued Queries waiting for a connection.\n"
			    "# TYPE contactd_store_queued gauge\n"
			    "contactd_store_queued %u\n"
			    "# HELP contactd_store_schema_version Schema version read from the "
			    "database.\n"
			    "# TYPE contactd_store_schema_version gauge\n"
			    "contactd_store_schema_version %d\n"
			    "# HELP contactd_store_errors_total Queries that failed.\n"
			    "# TYPE contactd_store_errors_total counter\n"
			    "contactd_store_errors_total %llu\n",
			    st.connections_up > 0, st.connections_up, st.pool_size, st.queued,
			    store_schema_version(app->store), st.errors);
	evbuffer_add_printf(out, "# HELP contactd_store_query_seconds Query latency.\n"
				 "# TYPE contactd_store_query_seconds histogram\n");
	for (int i = 0; i < st.nbounds; i++)
		evbuffer_add_printf(out, "contactd_store_query_seconds_bucket{le=\"%g\"} %llu\n",
				    st.bounds[i], st.buckets[i]);
	evbuffer_add_printf(out,
			    "contactd_store_query_seconds_bucket{le=\"+Inf\"} %llu\n"
			    "contactd_store_query_seconds_sum %.6f\n"
			    "contactd_store_query_seconds_count %llu\n",
			    st.queries, st.sum_s, st.queries);
}
