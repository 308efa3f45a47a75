"""Human preference study (paper §2.4): blinded pairwise comparisons of continuations, served to annotators,
stored durably in one SQLite file, and scored with intervals, paired tests, Bradley–Terry and agreement.

``items`` builds comparisons from fit-text / eval outputs, ``store`` is the database, ``app`` the annotation
server, ``simulate`` synthetic annotators over HTTP, ``exchange`` Label Studio / CSV export and import,
``stats`` and ``report`` the analysis, ``cli`` the ``hyperfit study`` command group.
"""
