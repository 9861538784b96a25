"""What the broker and the writer count as they work, read by the metrics page at scrape
time: plain counters and fixed-bucket histograms, no I/O and no dependency."""
