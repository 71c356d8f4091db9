/* pagesrc: the operations every page source shares (lib/pagesrc.h): the
 * write path's refusal for sources that cannot hold modified pages. */
#include "pagesrc.h"

/* Only a source with a put operation can hold what eviction writes back. */
int dp_pagesrc_can_put(const struct dp_pagesrc *s)
{
    return s && s->ops->put;
}

/* The local images and a raw file are the checkpoint as it was taken:
 * writing into them would change it for every later restore. */
int dp_pagesrc_put(struct dp_pagesrc *s, int32_t pid, const uint64_t *img, const uint8_t *const *data, uint32_t n,
                   dp_pagesrc_put_cb cb, void *cookie, struct dp_err *err)
{
    if (!dp_pagesrc_can_put(s)) {
        dp_err_set(err, "%s takes no writes: only a page server holds modified pages (--source)",
                   s ? s->desc : "no page source");
        return -1;
    }
    return s->ops->put(s, pid, img, data, n, cb, cookie, err);
}

/* How many pages one put may carry, 0 when the source does not know yet. */
uint32_t dp_pagesrc_put_max(struct dp_pagesrc *s)
{
    return dp_pagesrc_can_put(s) && s->ops->put_max ? s->ops->put_max(s) : 0;
}
