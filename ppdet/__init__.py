"""The part of PaddleDetection this search needs, rebuilt on Paddle 3. Importing it changes no process-wide
setting (logging, warning filters, glog): the entry points do that (``ppdet.utils.logs.quiet_libraries``)."""
