"""The archive as a static HTML site, for people who do not run a CLI (a reviewer, an auditor, the
post-mortem meeting): ``opsbook site --out DIR``, and the same pages inside an evidence bundle.

Layout of ``DIR``::

    index.html                every run, newest first, with filters (plain JavaScript, no server)
    runs.js                   the runs as a JavaScript array (window.OPSBOOK_RUNS), loaded by index.html
                              with a <script src>: fetch() of a local JSON file fails on file://
    assets/site.css, site.js  the style sheet and the index's filter script (this package's
                              site.css and site.js, copied)
    runs/<run_id>.html        one page per run: header (status, headline, runbook, target, mode,
                              operator, plan <-> apply, timings, verify status), steps, plots, evidence,
                              parameters, the record's files
    runs/<run_id>/            that run's files, copied so that the site works anywhere it is moved:
                              notebook.html (the executed notebook), manifest.json, evidence/...,
                              plot-N.png (the image/png outputs of a deploy-new-model notebook)
    incidents/<id>.html       one page per incident: its runs and their steps in time order
    .opsbook-site             marker: this folder is a site opsbook wrote (a rebuild replaces it)

Every text that comes from a record (titles, summaries, parameters, ids) is escaped with
``html.escape``; the index's script builds its rows with ``textContent``; no page has an inline script
or an inline event handler, and each carries a Content-Security-Policy that forbids them, so a hostile
manifest cannot inject script. A file copied from a record whose name a browser would render as a page
(``.html``, ``.svg``...) is given a ``.txt`` suffix. Files are read from a record folder only when they
are regular files inside it (no symlink is followed out of a record).

The archive is verified once (``archive.verify()``, as ``opsbook verify`` does) and each problem is
shown on the page of the record it names; ``verify=False`` skips it (the pages say so). Inside an
evidence bundle (:func:`bundle_pages`) the pages link to the bundle's ``records/`` instead of copies,
and the bundle's own check is ``opsbook evidence --verify``.
"""

from opsbook.records.site.output import MARKER, SiteInfo, build, bundle_pages
from opsbook.records.site.runs import SiteRun, collect, extract_pngs

__all__ = ["MARKER", "SiteInfo", "SiteRun", "build", "bundle_pages", "collect", "extract_pngs"]
