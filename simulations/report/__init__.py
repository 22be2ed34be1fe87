"""``ecs-report``: one self-contained HTML report per run (issue 16, part 3).

:mod:`~simulations.report.run_files` reads a run directory, :mod:`~simulations.report.scoring`
rescores its exported model on the held-out centers, :mod:`~simulations.report.figures` draws,
:mod:`~simulations.report.sections` and :mod:`~simulations.report.build` assemble the page,
:mod:`~simulations.report.cli` is the command.
"""
