"""Podcast feeds: read a show's feed, bring its episodes into S3, write a manifest; afterwards, a feed of the run.

    net.py       which URLs may be fetched (http(s) only, no private addresses), redirects checked hop by hop
    read.py      RSS 2.0 + iTunes, Atom and paged feeds → ``Episode``s
    fetch.py     each enclosure streamed to S3 once (an episode already there is not fetched again)
    manifest.py  the manifest lines: the episode's GUID as ``id``, its title, date and numbers as ``metadata``
    write.py     a new feed from a run's provenance (or the source feed with alternate enclosures)

A feed comes from outside: everything in it is untrusted text, every URL in it is checked before it is fetched.
"""
