"""The stages of one pass (see pipeline.py for the order): one module per stage, each a
function over the pass's context that tells the reporter what happened.

A new stage goes in a module of its own here and is called from pipeline.py; a new decision
goes in decisions/ (plan.py, verdict.py), which stays pure.
"""
