/* metrics: the Prometheus text exposition of GET /metrics. */
#ifndef CONTACTD_METRICS_H
#define CONTACTD_METRICS_H

struct app;
struct evbuffer;

/* Appends every metric of APP to OUT in the Prometheus text format 0.0.4. */
void metrics_render(const struct app *app, struct evbuffer *out);

#endif
