"""Event sources that write Delphes-format ROOT files (DESIGN.md section 7); pure code, no Dagster or Spark.

* ``toy``: the fast built-in generator (numpy only), the default for ``make run`` and the tests;
* ``pythia``: Pythia 8 hard process, shower and hadronisation with minimum-bias pileup from a reused pool,
  passed through ``detector``, a Delphes-like fast simulation (tracker, calorimeters, leptons, anti-kT
  jets with fastjet, b-tagging, MET);
* ``rootio`` writes either engine's ``EventBatch`` stream atomically as a TTree ``Delphes``.
"""
