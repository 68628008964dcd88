-- Analytics: a duration histogram is kept only where a scan reads one (store/rollup.h,
-- rollup_keeps_hist): analytics_hour, and the status rows of analytics_dim (dims 3 and 11), whose
-- hists give an unfiltered answer's percentiles. The others' are emptied: a smaller table to
-- read, and 11 of the 14 keys a write adds to no longer add up a histogram.
UPDATE analytics_total SET hist = x'' WHERE length(hist) > 0;
UPDATE analytics_dim SET hist = x'' WHERE dim NOT IN (3, 11) AND length(hist) > 0;
