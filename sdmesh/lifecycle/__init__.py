"""Component lifecycle: SmartFrog's deploy/start/terminate semantics as a sans-IO core.

``Engine`` (engine.py) takes events and returns actions; behaviours.py holds what each
component class does; runtime.py resolves LAZY references against the live tree.
"""
